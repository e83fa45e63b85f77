"""The process backend's Engine: one warm worker process per worker, driven over pipes (parent side).

Each worker process (worker.py, next to this file) runs the same runtime as a sub-interpreter,
so the cells behave the same; inputs, replies and result records are the protocol's. One reader
thread per worker turns its frames into output and result records. Lock order: the Pool's lock,
then this engine's condition; the reader threads take only the latter, and nothing writes to a
pipe or waits for a process while holding it.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import warnings

from ..._wire import protocol
from ...exceptions import WorkerDied
from ...procfs import cpu_seconds
from ..signals import deferred_interrupts, wait_for
from ..engine import EngineBase

__all__ = ["ProcessEngine"]

_WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
#: What interrupts a worker's task: not SIGINT, which a terminal's Ctrl-C and jupyter_client's
#: stop button send to the kernel's whole process group, workers included (a background run
#: must go on); workers ignore SIGINT. SIGURG's default action is to ignore it, so one that
#: reaches a worker still starting up is harmless (as the ipyparallel backend's is).
INTERRUPT = signal.SIGURG
_START_TIMEOUT = 60.0  # seconds for a worker process to start before the pool gives up
_STOP_GRACE = 1.0  # seconds running workers get to stop, then idle ones to exit, before SIGKILL


class _Worker:
    """One worker process, its pipes, and its reader thread (parent side)."""

    def __init__(self, worker_id: int, n_workers: int, path: list[str], cpu_offset: float = 0.0):
        self.id = worker_id
        self.ready = threading.Event()
        self.returncode: int | None = None  # set once the process is gone
        self.cpu_offset = cpu_offset  # CPU seconds of the processes this one replaced
        self.cpu_last = cpu_offset
        self.reader: threading.Thread | None = None
        self.killed = False  # by kill(), on purpose
        cmd_r, self.cmd_w = os.pipe()
        self.reply_r, reply_w = os.pipe()
        lifeline_r, self.lifeline_w = os.pipe()
        for fd in (self.cmd_w, reply_w):
            _widen(fd)
        try:
            # stdin from /dev/null: workers must not compete with IPython for the terminal.
            # stdout/stderr are inherited, for what C code writes to fd 1 and 2. The kernel's
            # process group, so that a kill of the whole group (a kernel restart) ends them too.
            self.proc = subprocess.Popen(
                [sys.executable, "-P", _WORKER_SCRIPT, str(cmd_r), str(reply_w), str(lifeline_r), str(int(INTERRUPT))],
                pass_fds=(cmd_r, reply_w, lifeline_r),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            for fd in (self.cmd_w, self.reply_r, self.lifeline_w):
                os.close(fd)
            raise
        finally:
            for fd in (cmd_r, reply_w, lifeline_r):
                os.close(fd)
        self.pid = self.proc.pid
        # A pipe buffers 64 KiB: the start message never blocks on a process that is starting.
        self.send(protocol.frame((worker_id, n_workers, path, os.getcwd())))

    def close_pipes(self) -> None:
        """Close the parent's ends of the command pipe and the lifeline (end of file for the
        worker: it exits). The reply pipe is its reader thread's to close. Idempotent: a closed
        fd number may already be someone else's."""
        for name in ("cmd_w", "lifeline_w"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                _close_fd(fd)

    def send(self, frame: bytes) -> bool:
        """Write a whole frame (blocks while the worker reads a large one); False if it is gone."""
        view = memoryview(frame)
        try:
            while view:
                view = view[os.write(self.cmd_w, view) :]
        except OSError:  # EPIPE: the process died; its reader thread reports it
            return False
        return True

    def signal(self, signum: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    def cpu_time(self) -> float:
        """CPU seconds of this process (all its threads) plus those it replaced; from /proc on
        Linux, without stopping the process; the last reading once it is gone."""
        cpu = cpu_seconds(self.pid) if self.returncode is None else None
        if cpu is not None:
            self.cpu_last = self.cpu_offset + cpu
        return self.cpu_last


class ProcessEngine(EngineBase):
    """The Engine (see backends/engine.py) over n worker processes."""

    _kind = "ProcessPool"

    def __init__(self, n: int, path: list[str]):
        super().__init__(n)
        self.owner_pid = os.getpid()
        self._cond = threading.Condition()
        self._pending = 0  # workers still busy with the current run
        self._task_start = 0.0
        self._streaming = False
        self._records: list = []  # per worker: its result record, None while it runs
        self._outputs: list[tuple[list[str], list[str]]] = []
        self._queue: list[list[list]] = []  # per worker: [stream, text] chunks not yet drained
        self._progress: list[tuple[int, int | None] | None] = [None] * n  # the latest each reported
        self._path = path
        self._workers: list[_Worker] = []
        try:
            self._workers = self._spawn(range(n), [0.0] * n)
        except BaseException:
            self.close(0.0)
            raise

    # -- the Engine ---------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._pending > 0

    def start(
        self,
        source: str,
        filename: str,
        payloads: list[bytes],
        stream: bool = False,
        wait: float = 0.0,
        lent: list[list] = (),
    ) -> bool:
        """Hand one task to every worker (first replacing dead processes), then wait up to
        ``wait`` seconds; True when the run is already done. The run starts in full or not at
        all: a Ctrl-C meanwhile is raised once every task is out."""
        if payloads and len(payloads) not in (1, self.size):
            raise ValueError(f"expected 0, 1 or {self.size} payloads, got {len(payloads)}")
        self._check_startable()
        self._replace_dead()
        cwd = os.getcwd()
        if len(payloads) == self.size and self.size > 1:
            frames = [protocol.frame(((source, filename, p), cwd)) for p in payloads]
        else:
            frames = [protocol.frame(((source, filename, payloads[0] if payloads else None), cwd))] * self.size
        n = self.size
        with deferred_interrupts():
            with self._cond:
                self._check_startable()
                self._records, self._outputs = [None] * n, [([], []) for _ in range(n)]
                self._queue, self._progress = [[] for _ in range(n)], [None] * n
                self._pending, self._task_start, self._streaming = n, time.perf_counter(), bool(stream)
                self._started()
                for w in self._workers:
                    if w.returncode is not None:  # died since _replace_dead looked
                        self._died(w)
            # Outside the lock: a large payload blocks here until the worker has read it, and
            # the reader threads need the lock meanwhile. A worker that died is reported by its reader.
            for w, frame in zip(self._workers, frames):
                w.send(frame)
        return self.wait(wait) if wait > 0 else False

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds (an interruptible wait); True once every worker is done."""
        return wait_for(self._cond, lambda: self._pending == 0 or self._closed, timeout)

    def collect(self) -> list[tuple]:
        """The finished run's result records, the same ones until the next start()."""
        with self._cond:
            self._check_collectable(lambda: not self._pending)
            return list(self._records)

    def release(self) -> None:
        with self._cond:
            if not self._pending:
                self._records = [None] * len(self._records)

    def interrupt(self) -> list[int]:
        """INTERRUPT to every worker process still running the current run; returns their ids."""
        ids = self.busy_workers()
        for i in ids:
            self._workers[i].signal(INTERRUPT)
        return ids

    def kill(self, ids: list[int]) -> list[int]:
        """SIGKILL these workers' processes if they still run the current run; returns those
        killed. Their tasks end with WorkerDied errors as their readers see them go."""
        busy = set(self.busy_workers())
        killed = [i for i in ids if i in busy]
        for i in killed:
            self._workers[i].killed = True  # the caller says so: _replace_dead need not
            self._workers[i].signal(signal.SIGKILL)
        with self._cond:  # until their readers have seen them go, so that the next run replaces them
            self._cond.wait_for(lambda: all(self._workers[i].returncode is not None for i in killed), 5.0)
        return killed

    def busy_workers(self) -> list[int]:
        with self._cond:
            return [w.id for w in self._workers if self._busy(w)]

    def cpu_times(self) -> list[float]:
        return [w.cpu_time() for w in list(self._workers)]

    def progress(self) -> list[tuple[int, int | None] | None]:
        """What each worker process last sent: it reports 10 times a second while its task has a
        progress, with its output."""
        with self._cond:
            return list(self._progress)

    def drain_output(self) -> list[tuple[int, int, str]]:
        """Output since the last call, worker by worker, in order, consecutive writes to the
        same stream joined."""
        with self._cond:
            queue, self._queue = self._queue, [[] for _ in self._queue]
        return [(i, stream, text) for i, chunks in enumerate(queue) for stream, text in chunks]

    def close(self, timeout: float) -> list[tuple[int, str]]:
        """Stop running tasks (INTERRUPT, up to 1 s), let the processes exit (end of file on their
        pipes), SIGKILL those still there when ``timeout`` is up, and reap them all. A process
        can always be killed, so no worker is ever abandoned: returns []. Harmless twice; in a
        forked child it only lets go of its copies of the pipes."""
        with self._cond:
            if not self._mark_closed():
                return []
            # A waiter for the current run wakes: it will find the pool closed.
            workers = list(self._workers)
            self._cond.notify_all()
        if os.getpid() != self.owner_pid:
            for w in workers:  # no reader threads here (fork copies only the calling thread)
                w.close_pipes()
                _close_fd(w.reply_r)
            return []
        deadline = time.monotonic() + min(_STOP_GRACE, timeout)
        try:
            while time.monotonic() < deadline:
                with self._cond:  # the readers still record answers: one that comes ends the wait for it
                    busy = [w for w in workers if self._busy(w) and w.returncode is None]
                if not busy:
                    break
                for w in busy:
                    w.signal(INTERRUPT)
                with self._cond:
                    self._cond.wait(0.05)
        finally:
            for w in workers:  # end of file on both: an idle worker exits at once
                w.close_pipes()
            deadline = time.monotonic() + max(0.0, timeout - _STOP_GRACE)
            for w in workers:
                try:
                    w.proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    w.proc.kill()  # stuck in C code, or ignoring the interrupt
                    w.proc.wait()
            for w in workers:
                if w.reader is not None:
                    w.reader.join(5.0)
            with self._cond:
                self._pending = 0
                self._cond.notify_all()
        return []

    # -- internals ------------------------------------------------------------------------

    def _spawn(self, ids, cpu_offsets) -> list[_Worker]:
        """Start these workers' processes all at once, then wait until every one is ready."""
        workers = []
        try:
            for i, offset in zip(ids, cpu_offsets):
                with deferred_interrupts():  # a process started is one this list knows, to kill if need be
                    w = _Worker(i, self.size, self._path, offset)
                    workers.append(w)
                w.reader = threading.Thread(
                    target=self._read, args=(w,), daemon=True, name=f"ipy_parallel process worker {i} reader"
                )
                w.reader.start()
            deadline = time.monotonic() + _START_TIMEOUT
            for w in workers:
                while not w.ready.wait(0.1):  # in slices, so that Ctrl-C is seen
                    if w.returncode is not None:
                        raise RuntimeError(
                            f"worker {w.id}'s process exited while starting "
                            f"({_how(w.returncode)}); see its stderr above"
                        )
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"worker {w.id}'s process did not start within {_START_TIMEOUT:g} s")
        except BaseException:
            # All of them, even through another Ctrl-C: one left with its lifeline open would
            # live as long as this process.
            with deferred_interrupts():
                for w in workers:
                    w.proc.kill()
                    w.proc.wait()
                    w.close_pipes()
            raise
        return workers

    def _replace_dead(self) -> None:
        with self._cond:
            dead = [w for w in self._workers if w.returncode is not None]
        if not dead:
            return
        self._path = list(sys.path)
        fresh = self._spawn([w.id for w in dead], [w.cpu_last for w in dead])
        with self._cond:
            for old, new in zip(dead, fresh):
                self._workers[old.id] = new
        for old in dead:
            if old.reader is not None:
                old.reader.join(5.0)
            old.close_pipes()
            if old.killed:
                continue
            warnings.warn(
                f"ipy_parallel: worker {old.id}'s process had died ({_how(old.returncode)}); "
                "a new process replaces it, and the variables it had are gone",
                RuntimeWarning,
                stacklevel=7,
            )  # the caller of run() or submit()

    def _read(self, w: _Worker) -> None:
        """The reader thread of one worker: its frames, then, at end of file, its death."""
        buf = bytearray()
        fd = w.reply_r
        header = protocol.FRAME_HEADER
        while True:
            try:
                chunk = os.read(fd, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            try:
                while len(buf) >= header:
                    size = protocol.frame_size(buf[:header])
                    if len(buf) < header + size:
                        break
                    message = protocol.unframe(buf[header : header + size])
                    del buf[: header + size]
                    self._handle(w, message)
                    del message  # not kept while this thread waits for the next frame: a value may be big
            except Exception:  # a garbled stream: this process can no longer be trusted
                w.proc.kill()
                break
        _close_fd(fd)
        returncode = w.proc.wait()  # the pipe closes as the process exits
        with self._cond:
            w.returncode = returncode
            if self._busy(w):
                self._died(w)
            self._cond.notify_all()

    def _handle(self, w: _Worker, message: tuple) -> None:
        kind = message[0]
        if kind == protocol.READY:
            w.ready.set()
            return
        with self._cond:
            if not self._busy(w):
                return  # a stray frame after close() gave up on the run
            if kind == protocol.OUTPUT:
                queue = self._queue[w.id]
                for stream, data in message[1]:
                    text = data.decode("utf-8")
                    if stream == protocol.PROGRESS:
                        self._progress[w.id] = protocol.read_progress(text)
                        continue
                    self._outputs[w.id][stream - 1].append(text)
                    if self._streaming:
                        if queue and queue[-1][0] == stream:
                            queue[-1][1] += text
                        else:
                            queue.append([stream, text])
            else:  # DONE: a garbled kind fails this unpacking, and the reader ends the process
                _, reply, wall, cpu = message
                self._finish(w, reply, wall, cpu)

    def _died(self, w: _Worker) -> None:
        """End w's task with a WorkerDied error (the engine's condition held)."""
        message = (
            f"the worker's process died ({_how(w.returncode)}) while running this cell; "
            "the next run starts a new one in its place, without the variables it had"
        )
        error = protocol.error_record(
            "ipy_parallel.WorkerDied",
            message,
            f"ipy_parallel.WorkerDied: {message}\n",
            pickle.dumps(WorkerDied(message)),
        )
        self._finish(w, protocol.reply(None, error), time.perf_counter() - self._task_start, 0.0)

    def _busy(self, w: _Worker) -> bool:
        """w has a task of the current run and has not answered it (the condition held)."""
        return self._pending > 0 and self._records[w.id] is None

    def _finish(self, w: _Worker, reply, wall, cpu) -> None:
        out, err = self._outputs[w.id]
        self._records[w.id] = protocol.result_record(w.id, reply, "".join(out), "".join(err), wall, cpu)
        self._pending -= 1
        if self._pending == 0:
            self._cond.notify_all()


def _widen(fd: int) -> None:
    """Give a pipe 1 MiB of buffer instead of 64 KiB (Linux; best effort): large inputs and
    results cross in 16 times fewer system calls and wake-ups."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
    except (ImportError, AttributeError, OSError):
        pass


def _close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _how(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit code {returncode}"
