"""`!cmd` and `%pip` in a kernel without os.fork(): IPython runs them through pexpect, whose fork would end every pool.

A child forked beside live sub-interpreters crashes (gh-139759), so the engine ends every pool
before os.fork() and the workers lose their variables, and a background run its results.
ipykernel's `!cmd` (IPython's system_piped) forks through pexpect's pty.fork(). Here the command
runs the way subprocess starts processes (no Python-level fork, no fork hooks), still on a
pseudo-terminal as pexpect gives it, with its output streamed into the cell as it comes.
"""

from __future__ import annotations

import codecs
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
from subprocess import CalledProcessError

from ..backends.signals import deferred_interrupts

__all__ = ["install", "uninstall", "run_command"]

#: After Ctrl-C: how long the command has to end on its SIGINT (pexpect's figure) before SIGKILL.
TERMINATE_WAIT = 0.2
#: The command's terminal, as pexpect's: 24 rows of 80 columns.
WINDOW = (24, 80)


def install(shell) -> None:
    """Make ``shell.system`` (what `!cmd`, `%pip` and `%conda` call) fork-free, where it is
    IPython's pexpect-based system_piped (ipykernel's, a plain InteractiveShell's); terminal
    IPython's system_raw already uses subprocess, and is left alone."""
    if (
        os.name == "posix"
        and getattr(type(shell).system, "__name__", "") == "system_piped"
        and "system" not in vars(shell)
    ):
        shell.system = _System(shell)


def uninstall(shell) -> None:
    """Give the shell back its own ``system``."""
    if isinstance(vars(shell).get("system"), _System):
        del shell.system


class _System:
    """IPython's system_piped, contract and all: variables expanded ($x, {x}) in the caller's
    frame, the exit code in ``_exit_code`` (negative for a signal), CalledProcessError with
    ``system_raise_on_error``, a trailing & refused, Ctrl-C ending the command and not the cell."""

    def __init__(self, shell):
        self.shell = shell

    def __call__(self, cmd: str) -> None:
        if cmd.rstrip().endswith("&"):
            raise OSError("Background processes not supported.")
        exit_code = run_command(self.shell.var_expand(cmd, depth=1))
        self.shell.user_ns["_exit_code"] = exit_code
        if getattr(self.shell, "system_raise_on_error", False) and exit_code != 0:
            raise CalledProcessError(exit_code, cmd)


def run_command(cmd: str, out=None) -> int:
    """Run ``cmd`` in the user's shell ($SHELL, else sh) on a pseudo-terminal of its own, writing
    what it prints to ``out`` (sys.stdout) as it comes; returns its exit status, or minus the
    signal that ended it. Blocks until it ends; Ctrl-C sends SIGINT to its process group, then
    SIGKILL after TERMINATE_WAIT, and returns (as IPython's does)."""
    import fcntl  # POSIX only, as the fork this avoids
    import pty
    import termios

    out = out if out is not None else sys.stdout
    program = shutil.which(os.environ.get("SHELL", "sh")) or shutil.which("sh") or "/bin/sh"
    master, slave = pty.openpty()
    proc = None
    try:
        try:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *WINDOW, 0, 0))
            proc = subprocess.Popen(
                [program, "-c", cmd], stdin=slave, stdout=slave, stderr=slave, start_new_session=True
            )  # its own group: Ctrl-C is ours to pass on
        finally:
            os.close(slave)
        decoder = codecs.getincrementaldecoder(_encoding())("replace")
        try:
            _copy(master, proc, out, decoder, None)
            proc.wait()  # a command may close the terminal and go on: closing ours would hang it up
        except KeyboardInterrupt:
            _signal_group(proc, signal.SIGINT)
            try:
                _copy(master, proc, out, decoder, TERMINATE_WAIT)
            except KeyboardInterrupt:  # impatient users press it twice
                pass
            _signal_group(proc, signal.SIGKILL)  # what ignored SIGINT, the command's children too
        out.write(decoder.decode(b"", final=True))
        out.flush()
    finally:
        # Whatever went wrong on our side (a failing `out`, a Ctrl-C at any point), the command
        # neither outlives the call nor stays a zombie, and the terminal is closed.
        with deferred_interrupts():
            if proc is not None and proc.poll() is None:
                _signal_group(proc, signal.SIGKILL)
            status = proc.wait() if proc is not None else 0
            os.close(master)
    return -(status - 128) if status > 128 else status  # a shell reports a signal as 128 + n


def _copy(master: int, proc: subprocess.Popen, out, decoder, timeout: float | None) -> None:
    """Copy the terminal's output to ``out`` until it closes (every process holding it ended),
    the shell has ended and nothing more comes (a daemon it left may hold the terminal open), or
    ``timeout`` seconds have passed."""
    poller = select.poll()  # not select(): a kernel may well have 1,024 files open
    poller.register(master, select.POLLIN)
    deadline = None if timeout is None else time.monotonic() + timeout
    while deadline is None or time.monotonic() < deadline:
        if not poller.poll(50):
            if proc.poll() is not None:
                return
            continue
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the terminal's last writer closed it
            return
        if not data:
            return
        out.write(decoder.decode(data))
        out.flush()


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _encoding() -> str:
    from IPython.utils.encoding import DEFAULT_ENCODING

    return DEFAULT_ENCODING or "utf-8"
