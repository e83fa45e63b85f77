"""The helper process that runs the contestants that fork, and its pickle-over-pipe protocol."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys

from .cold_start import first_result_processes
from .runners import multiprocessing_pool


class ContestantProcess:
    """A small helper process that runs the multiprocessing contestants, their pools started
    from it: os.fork() in this process would end every sub-interpreter here (a child forked
    beside them crashes), the user's %%parallel workers included, and spawned children would
    re-run this process's __main__ (a script, an .ipy file). It is a process group of its own
    that ignores SIGINT: a Ctrl-C stops the benchmark here, and close() kills the helper and
    every process it started. Blocking; the GIL is released while it waits for an answer."""

    def __init__(self):
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "ipy_parallel.bench", "--contestants"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            self._answer()  # ready
        except BaseException:
            self.close()
            raise

    def run(self, method: str, ns: list[int]) -> list[int]:
        pickle.dump((method, ns), self._proc.stdin)
        self._proc.stdin.flush()
        return self._answer()

    def _answer(self):
        try:
            ok, value = pickle.load(self._proc.stdout)
        except EOFError:
            raise RuntimeError(f"the benchmark's helper process ended (status {self._proc.wait()})") from None
        if not ok:
            raise RuntimeError(f"in the benchmark's helper process: {value}")
        return value

    def close(self) -> None:
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)  # it and the pools it started
        except ProcessLookupError:
            pass
        self._proc.wait()
        for pipe in (self._proc.stdin, self._proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


def serve() -> None:
    """The helper process's loop (python -m ipy_parallel.bench --contestants): (method, ns) in,
    (ok, values or why) out, pickled on stdin and stdout, until end of file. "first result fork"
    takes a pool size and answers first_result_processes(n, "fork") from this small process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the pools' processes too
    requests, answers = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # what the contestants print must not mix with the answers
    runners = {
        "multiprocessing fork": lambda ns: multiprocessing_pool(ns, "fork"),
        "multiprocessing spawn": lambda ns: multiprocessing_pool(ns, "spawn"),
        "first result fork": lambda n: first_result_processes(n, "fork"),
    }
    pickle.dump((True, os.getpid()), answers)
    answers.flush()
    while True:
        try:
            method, ns = pickle.load(requests)
        except EOFError:
            return
        try:
            answer = (True, runners[method](ns))
        except Exception as exc:
            answer = (False, f"{method}: {type(exc).__name__}: {exc}")
        pickle.dump(answer, answers)
        answers.flush()
