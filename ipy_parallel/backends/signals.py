"""Locks and critical sections that a KeyboardInterrupt cannot break: the two the run lifecycle and the Python engines stand on."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

from .. import _engine  # LockHold only: no backend's transport

__all__ = ["InterruptSafeLock", "wait_for", "interrupts_as_raised", "deferred_interrupts"]


class InterruptSafeLock:
    """A lock for ``with lock.held():`` blocks that a KeyboardInterrupt cannot leave held.

    CPython 3.14 calls a with statement's ``__enter__`` through an ordinary CALL, which runs
    pending signal handlers after the call returns and before the block and its ``__exit__`` are
    set up (CPython gh-148874): a Ctrl-C there leaves a plain lock acquired for good, and every
    later run waits for it forever. 3.12 and 3.13's BEFORE_WITH runs none, so there ``held()`` is
    the plain lock. On 3.14+ it is the engine's LockHold, made for that one with statement: its
    acquire is noted in C, and interrupted in that window it is dropped as the exception unwinds
    and releases the lock (native/lock_hold.h). Deferring SIGINT instead would swap its handler
    twice a hold: two system calls, more than a run's own locking costs."""

    def __init__(self, lock: threading.Lock | None = None):
        # ``lock``: one a threading.Condition is also built on (held through held() only).
        self._lock = threading.Lock() if lock is None else lock

    def held(self):
        """The object of one ``with`` statement that holds the lock."""
        return self._lock if _WITH_ENTERS_ATOMICALLY else _engine.LockHold(self._lock)

    def locked(self) -> bool:
        return self._lock.locked()


_WITH_ENTERS_ATOMICALLY = sys.version_info < (3, 14)


class interrupts_as_raised:  # noqa: N801 (a context manager named as a function, as contextlib's suppress)
    """Around Condition.wait and Event.wait in the thread Ctrl-C lands in. Condition.wait
    releases its lock, then takes it back in a finally: a KeyboardInterrupt between the release
    and the try, or at the start of the taking back, leaves the lock free, and the with
    statement's exit then raises RuntimeError ("cannot release un-acquired lock", "release
    unlocked lock") in place of the interrupt (seen on 3.14t). The lock is free, as it should be
    after the block: the interrupt is what the caller gets. A class, not a generator: it is in
    every wait of a run (a generator-based one costs microseconds each time)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if kind is not None and issubclass(kind, RuntimeError) and isinstance(exc.__context__, KeyboardInterrupt):
            raise exc.__context__ from None
        return False


def wait_for(cond: threading.Condition, predicate, timeout: float, hold=None) -> bool:
    """``with cond: return cond.wait_for(predicate, timeout)``, in the thread Ctrl-C lands in
    (``hold``: what the with statement holds instead, an InterruptSafeLock's held() over the
    condition's lock); see interrupts_as_raised()."""
    with interrupts_as_raised():
        with cond if hold is None else hold:
            return cond.wait_for(predicate, max(timeout, 0.0))


@contextlib.contextmanager
def deferred_interrupts():
    """For engines written in Python: a KeyboardInterrupt (SIGINT) that arrives inside the
    block is raised when it ends, so that the block's stores happen all or not at all. Outside
    the main thread, or where SIGINT is not Python's to handle, it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.getsignal(signal.SIGINT)
    except ValueError:
        previous = None
    if not callable(previous):  # SIG_IGN, SIG_DFL, or not installed from Python
        yield
        return
    pending = []
    signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            previous(signal.SIGINT, None)
