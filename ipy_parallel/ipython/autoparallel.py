"""%autoparallel: while on, every cell is run as a %%parallel cell, by an input transformer of the shell (ipyparallel's %autopx, without patching run_cell)."""

from __future__ import annotations

__all__ = ["AutoParallel"]

# Cells that begin with IPython's own syntax run in the kernel as usual: %autoparallel off must
# be able to run, and workers could not run a magic or a shell command anyway.
LOCAL = ("%", "!")
PROMPT_MARK = "[parallel] "


class AutoParallel:
    """Turns a shell's automatic %%parallel on and off. The transformer is one of the shell's
    cleanup transforms, which IPython runs before it looks for a cell magic, so a transformed
    cell goes the way of any %%parallel cell (history keeps what the user typed)."""

    def __init__(self, shell):
        self.shell = shell
        self._prompts = None  # the terminal's own prompts, while ours stand in

    @property
    def on(self) -> bool:
        return self._transform in self._transforms()

    def set(self, on: bool) -> None:
        transforms = self._transforms()
        if on and not self.on:
            transforms.append(self._transform)
            self._mark_prompt()
        elif not on and self.on:
            transforms.remove(self._transform)
            self._unmark_prompt()

    def _transforms(self) -> list:
        return self.shell.input_transformers_cleanup

    @staticmethod
    def _transform(lines: list[str]) -> list[str]:
        first = next((line.lstrip() for line in lines if line.strip()), "")
        if not first or first.startswith(LOCAL):
            return lines
        return ["%%parallel\n", *lines]

    def _mark_prompt(self) -> None:
        """In terminal IPython, the prompt says the mode ("[parallel] In [3]:")."""
        prompts = getattr(self.shell, "prompts", None)
        if prompts is None or not hasattr(prompts, "in_prompt_tokens"):
            return  # a kernel: %autoparallel's note says it instead
        self._prompts = prompts
        self.shell.prompts = _marked(self.shell, prompts)

    def _unmark_prompt(self) -> None:
        if self._prompts is not None:
            self.shell.prompts = self._prompts
            self._prompts = None


def _marked(shell, prompts):
    """The shell's prompts with the mode in front of the input prompt, the rest theirs (a
    Prompts subclass: the shell's trait takes nothing else)."""
    from IPython.terminal.prompts import Prompts
    from pygments.token import Token

    class MarkedPrompts(Prompts):
        def in_prompt_tokens(self, *args, **kwargs):
            return [(Token.Prompt, PROMPT_MARK), *prompts.in_prompt_tokens(*args, **kwargs)]

        def continuation_prompt_tokens(self, *args, **kwargs):
            return prompts.continuation_prompt_tokens(*args, **kwargs)

        def rewrite_prompt_tokens(self, *args, **kwargs):
            return prompts.rewrite_prompt_tokens(*args, **kwargs)

        def out_prompt_tokens(self, *args, **kwargs):
            return prompts.out_prompt_tokens(*args, **kwargs)

    return MarkedPrompts(shell)
