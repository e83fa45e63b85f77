"""%autoparallel: while on, every cell is run as a %%parallel cell, by an input transformer of the shell (ipyparallel's %autopx, without patching run_cell)."""

from __future__ import annotations

import sys

__all__ = ["AutoParallel"]

# Cells that begin with IPython's own syntax run in the kernel as usual: %autoparallel off must
# be able to run, and workers could not run a magic or a shell command anyway.
LOCAL = ("%", "!")
PROMPT_MARK = "[parallel] "


def _as_parallel_cell(lines: list[str]) -> list[str]:
    first = next((line.lstrip() for line in lines if line.strip()), "")
    if not first or first.startswith(LOCAL) or _inside_a_running_cell():
        return lines
    return ["%%parallel\n", *lines]


def _inside_a_running_cell() -> bool:
    """Whether IPython transforms code that a running cell hands it: the body of %%time,
    %%timeit or %%capture, the statement of %time. Those go through the same transforms as a
    typed cell, and belong to the cell that began with % (which runs in the kernel)."""
    from IPython.core.interactiveshell import InteractiveShell

    running = InteractiveShell.run_code.__code__
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is running:
            return True
        frame = frame.f_back
    return False


# IPython asks whether a cell is complete with the same transforms, minus those marked so: a
# cell magic would be complete only at a blank line, and an ordinary line must run on Enter.
_as_parallel_cell.has_side_effects = True


class AutoParallel:
    """Turns a shell's automatic %%parallel on and off. The transformer is one of the shell's
    cleanup transforms, which IPython runs before it looks for a cell magic, so a transformed
    cell goes the way of any %%parallel cell (history keeps what the user typed)."""

    def __init__(self, shell):
        self.shell = shell
        self._prompts = None  # the terminal's own prompts, while ours stand in

    @property
    def on(self) -> bool:
        return _as_parallel_cell in self._transforms()

    def set(self, on: bool) -> None:
        transforms = self._transforms()
        if on and not self.on:
            transforms.append(_as_parallel_cell)
            self._mark_prompt()
        elif not on and self.on:
            transforms.remove(_as_parallel_cell)
            self._unmark_prompt()

    def _transforms(self) -> list:
        return self.shell.input_transformers_cleanup

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
    """The shell's prompts (of whatever Prompts class) with the mode in front of the input
    prompt: an instance of a subclass of their class, with their state, so that everything
    else (the continuation prompt, whose signature IPython inspects) is theirs unchanged."""
    from pygments.token import Token

    class MarkedPrompts(type(prompts)):
        def in_prompt_tokens(self, *args, **kwargs):
            return [(Token.Prompt, PROMPT_MARK), *super().in_prompt_tokens(*args, **kwargs)]

    marked = MarkedPrompts.__new__(MarkedPrompts)
    marked.__dict__.update(prompts.__dict__)
    return marked
