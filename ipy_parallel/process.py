"""The process backend: ProcessPool, a Pool whose workers are warm, reused processes (numpy works there).

ProcessPool is a Pool: the same run/submit/results/timeout/interrupt code (pool.py) drives it,
through _ProcessEngine, which has the C++ engine's interface (start, wait, collect, interrupt,
drain_output, cpu_times, ...) but runs each worker in a process of its own
(ipy_parallel/_process_worker.py), executing the very runtime the sub-interpreters run
(_runtime.py). Inputs travel as they do to sub-interpreters (pool.py's payloads), the worker's
output comes back over a pipe as it is written, and its results are rebuilt by pool._result.
"""

from __future__ import annotations

import marshal
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import warnings
import weakref

from .errors import format_workers
from .pool import Pool, Run, _check_workers
from .procfs import cpu_seconds

__all__ = ["ProcessPool", "WorkerDied"]

_WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_process_worker.py")
_HEADER = 8
_START_TIMEOUT = 60.0  # seconds for a worker process to start before the pool gives up
_CLOSE_GRACE = 1.0  # seconds running workers get to stop, then idle ones to exit, before SIGKILL


_INTERRUPTED = ("KeyboardInterrupt", "", "KeyboardInterrupt: interrupted before the task reached this worker\n",
                pickle.dumps(KeyboardInterrupt()))


class WorkerDied(RuntimeError):
    """A worker process ended while it ran a cell (os._exit, a crash, a kill signal)."""


class ProcessPool(Pool):
    """A warm pool of worker processes with the interface and semantics of Pool.

    For cells that sub-interpreters cannot run: numpy and other extension modules that do not
    support isolated interpreters import and work here. ``ProcessPool(n)`` starts n processes at
    once and blocks until all are ready (about the start-up time of one Python process); they
    are reused until ``close()``, the end of a ``with`` block, or interpreter exit, and none
    outlives its parent (each also exits by itself when the parent dies).

    Each worker keeps its variables between runs and sees ``worker_id`` and ``n_workers``;
    workers follow the parent's sys.path and current directory. ``interrupt()`` sends SIGINT
    to the workers running the current run (idle workers ignore SIGINT, so Ctrl-C in a
    terminal or a notebook's stop button does not kill them). A worker process that dies during
    a run gets a WorkerDied error in its Result; the others' results are kept, and the next run
    starts a new process in its place, with a RuntimeWarning (its variables are gone).

    Blocking: as Pool; the constructor, ``run()``, ``Run.wait()``, ``Run.results()`` and
    ``close()`` block the calling thread with the GIL released.
    """

    def __init__(self, n: int | None = None):
        n = _check_workers(n, "ProcessPool(n): n")
        self._lock = threading.Condition()
        self._current = None
        self._closed_by_user = False
        self._sent_path = list(sys.path)  # each process starts with it (see _ProcessEngine)
        self._engine = _ProcessEngine(n, self._sent_path)
        # Closes the processes when the pool is dropped, and at interpreter exit (finalize
        # registers with atexit); the engine holds no reference back to the pool.
        self._finalizer = weakref.finalize(self, self._engine.close)

    def __repr__(self) -> str:
        return f"<ipy_parallel.ProcessPool {self.size} worker processes, {self.state}, {self.runs} runs>"

    def _start(self, *args) -> Run:
        try:
            return super()._start(*args)
        except KeyboardInterrupt:
            # Ctrl-C while the next run waits for workers stuck in an abandoned one (blocked in
            # C code, or ignoring SIGINT): a process, unlike a sub-interpreter, can be killed.
            current = self._current
            if current is not None and current._abandoned:
                killed = self._engine.kill_busy()
                if killed:
                    warnings.warn(f"ipy_parallel: killed the processes of workers {format_workers(killed)}, "
                                  "stuck in an earlier run; the next run starts new ones, without their "
                                  "variables", RuntimeWarning, stacklevel=3)  # the caller of run()
            raise

    def _restart_after_fork(self) -> None:
        """In a child forked from the process that made this pool, the worker processes are its
        parent's: start new ones for the child, and say that their state is gone."""
        if self._engine.owner_pid == os.getpid():
            return
        self._engine = _ProcessEngine(self._engine.size, list(sys.path))
        self._finalizer = weakref.finalize(self, self._engine.close)
        self._current = None
        self._sent_path = list(sys.path)
        warnings.warn("ipy_parallel: this process was forked from the one that started the ProcessPool, "
                      "so it got worker processes of its own, with no variables", RuntimeWarning, stacklevel=5)


class _Worker:
    """One worker process, its pipes, and the task it is running (parent side)."""

    def __init__(self, worker_id: int, n_workers: int, path: list[str], cpu_offset: float = 0.0):
        self.id = worker_id
        self.ready = threading.Event()
        self.returncode: int | None = None  # set once the process is gone
        self.cpu_offset = cpu_offset  # CPU seconds of the processes this one replaced
        self.cpu_last = cpu_offset
        cmd_r, self.cmd_w = os.pipe()
        self.reply_r, reply_w = os.pipe()
        lifeline_r, self.lifeline_w = os.pipe()
        for fd in (self.cmd_w, reply_w):
            _widen(fd)
        try:
            # stdin from /dev/null: workers must not compete with IPython for the terminal.
            # stdout/stderr are inherited, for what C code writes to fd 1 and 2.
            self.proc = subprocess.Popen(
                [sys.executable, "-P", _WORKER_SCRIPT, str(cmd_r), str(reply_w), str(lifeline_r)],
                pass_fds=(cmd_r, reply_w, lifeline_r), stdin=subprocess.DEVNULL,
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
        self.send(_frame((worker_id, n_workers, path, os.getcwd())))

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
                view = view[os.write(self.cmd_w, view):]
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


class _ProcessEngine:
    """The C++ engine's interface (_engine.Pool) over worker processes, for Pool and Run.

    One reader thread per worker turns its frames into output and results. Lock order: the
    Pool's lock, then this engine's condition; the reader threads take only the latter, and
    nothing writes to a pipe or waits for a process while holding it.
    """

    def __init__(self, n: int, path: list[str]):
        self.size = n
        self.owner_pid = os.getpid()
        self._cond = threading.Condition()
        self._closed = False
        # A run lasts from start() to collect(), as the C++ engine's running_; worker i is busy
        # with it while _results[i] is None.
        self._running = False
        self._task_start = 0.0
        self._runs = 0
        self._pending = 0
        self._streaming = False
        self._queue: list[list[list]] = []  # per worker: [stream, text] chunks not yet drained
        self._results: list = []
        self._outputs: list[tuple[list[str], list[str]]] = []
        self._path = path
        self._workers: list[_Worker] = []
        try:
            self._workers = self._spawn(range(n), [0.0] * n)
        except BaseException:
            self.close()
            raise

    # -- the C++ engine's interface -------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def busy(self) -> bool:
        return self._running

    @property
    def runs(self) -> int:
        return self._runs

    def start(self, source: str, filename: str, payloads: list[bytes], wait: float = 0.0) -> bool:
        """Hand one task to every worker (first replacing dead processes), then wait up to
        ``wait`` seconds as wait() does; True when the run is already done."""
        if payloads and len(payloads) not in (1, self.size):
            raise ValueError(f"expected 0, 1 or {self.size} payloads, got {len(payloads)}")
        with self._cond:
            if self._closed:
                raise RuntimeError("this pool is closed: create a new pool to run more work")
            if self._running:
                raise RuntimeError("this pool is still running a task: wait for it to finish first")
        self._replace_dead()
        cwd = os.getcwd()
        if len(payloads) == self.size and self.size > 1:
            frames = [_frame((source, filename, p, cwd)) for p in payloads]
        else:
            frames = [_frame((source, filename, payloads[0] if payloads else None, cwd))] * self.size
        n = self.size
        results, outputs, queue = [None] * n, [([], []) for _ in range(n)], [[] for _ in range(n)]
        now = time.perf_counter()
        with self._cond:
            # Plain stores only, so that a KeyboardInterrupt cannot land between them.
            self._results, self._outputs, self._queue = results, outputs, queue
            self._pending, self._task_start = n, now
            self._runs += 1
            self._running = True
        sent = 0
        try:
            with self._cond:
                for w in self._workers:
                    if w.returncode is not None:  # died since _replace_dead looked
                        self._died(w)
            # Outside the lock: a large payload blocks here until the worker has read it, and
            # the reader threads need the lock meanwhile.
            for w, frame in zip(self._workers, frames):
                w.send(frame)
                sent += 1
        except BaseException:  # Ctrl-C while a large payload goes out
            self._abort(sent)
            raise
        return self.wait(wait) if wait > 0 else False

    def _abort(self, sent: int) -> None:
        """Undo a start() cut short after ``sent`` workers had their task: nobody will collect
        this run, so stop it here and leave the engine idle. The worker whose task was half
        written cannot read another frame; it is killed, and replaced at the next run."""
        workers = self._workers
        with self._cond:
            for w in workers[sent + 1:]:
                if self._busy(w):
                    self._finish(w, None, _INTERRUPTED, 0, 0.0, 0.0)
        if sent < len(workers):
            workers[sent].signal(signal.SIGKILL)
        deadline = time.monotonic() + _CLOSE_GRACE
        while not self.wait(0.05):
            if time.monotonic() > deadline:
                self.kill_busy()
            else:
                self.interrupt()
        self.collect()

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds, GIL released; True once every worker is done."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._running or self._pending == 0, max(timeout, 0.0))

    def collect(self) -> list[tuple]:
        """The finished run's raw results, as the C++ engine gives them to pool._result."""
        with self._cond:
            if not self._running:
                raise RuntimeError("no run to collect: call start() first")
            if self._pending:
                raise RuntimeError("the run is not finished: wait() until it returns true")
            self._running = False
            results, self._results = self._results, []
            return results

    def interrupt(self) -> list[int]:
        """SIGINT to every worker process still running the current run; returns their ids."""
        ids = self.busy_workers()
        for i in ids:
            self._workers[i].signal(signal.SIGINT)
        return ids

    def kill_busy(self) -> list[int]:
        """SIGKILL every worker process still running the current run; returns their ids. Their
        tasks end with WorkerDied errors as the reader threads see them go."""
        ids = self.busy_workers()
        for i in ids:
            self._workers[i].signal(signal.SIGKILL)
        return ids

    def busy_workers(self) -> list[int]:
        with self._cond:
            return [w.id for w in self._workers if self._busy(w)]

    def cpu_times(self) -> list[float]:
        return [w.cpu_time() for w in list(self._workers)]

    def set_streaming(self, on: bool) -> None:
        with self._cond:
            self._streaming = bool(on)

    def drain_output(self) -> list[tuple[int, int, str]]:
        """Output since the last call, as the C++ engine gives it: worker by worker, in order,
        consecutive writes to the same stream joined."""
        with self._cond:
            queue, self._queue = self._queue, [[] for _ in self._queue]
        return [(i, stream, text) for i, chunks in enumerate(queue) for stream, text in chunks]

    def close(self) -> None:
        """Stop running tasks (SIGINT, up to 1 s), let the processes exit (end of file on their
        pipes), SIGKILL those still there after another second, and reap them all. Harmless
        twice; in a forked child it only lets go of its copies of the pipes."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            workers = list(self._workers)
        if os.getpid() != self.owner_pid:
            for w in workers:  # no reader threads here (fork copies only the calling thread)
                w.close_pipes()
                _close_fd(w.reply_r)
            return
        deadline = time.monotonic() + _CLOSE_GRACE
        while time.monotonic() < deadline:
            with self._cond:
                busy = [w for w in workers if self._busy(w) and w.returncode is None]
            if not busy:
                break
            for w in busy:
                w.signal(signal.SIGINT)
            with self._cond:
                self._cond.wait(0.05)
        for w in workers:  # end of file on both: an idle worker exits at once
            w.close_pipes()
        deadline = time.monotonic() + _CLOSE_GRACE
        for w in workers:
            try:
                w.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()  # stuck in C code, or ignoring SIGINT
                w.proc.wait()
        for w in workers:
            w.reader.join(5.0)
        with self._cond:
            self._running = False
            self._cond.notify_all()

    # -- internals ------------------------------------------------------------------------

    def _spawn(self, ids, cpu_offsets) -> list[_Worker]:
        """Start these workers' processes all at once, then wait until every one is ready."""
        workers = []
        try:
            for i, offset in zip(ids, cpu_offsets):
                w = _Worker(i, self.size, self._path, offset)
                workers.append(w)
                w.reader = threading.Thread(target=self._read, args=(w,), daemon=True,
                                            name=f"ipy_parallel process worker {i} reader")
                w.reader.start()
            deadline = time.monotonic() + _START_TIMEOUT
            for w in workers:
                while not w.ready.wait(0.1):  # in slices, so that Ctrl-C is seen
                    if w.returncode is not None:
                        raise RuntimeError(f"worker {w.id}'s process exited while starting "
                                           f"({_how(w.returncode)}); see its stderr above")
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"worker {w.id}'s process did not start within {_START_TIMEOUT:g} s")
        except BaseException:
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
            old.reader.join(5.0)
            old.close_pipes()
            warnings.warn(f"ipy_parallel: worker {old.id}'s process had died ({_how(old.returncode)}); "
                          "a new process replaces it, and the variables it had are gone", RuntimeWarning,
                          stacklevel=6)  # the caller of run() or submit()

    def _read(self, w: _Worker) -> None:
        """The reader thread of one worker: its frames, then, at end of file, its death."""
        buf = bytearray()
        fd = w.reply_r
        while True:
            try:
                chunk = os.read(fd, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            try:
                while len(buf) >= _HEADER:
                    size = int.from_bytes(buf[:_HEADER], "little")
                    if len(buf) < _HEADER + size:
                        break
                    message = marshal.loads(buf[_HEADER:_HEADER + size])
                    del buf[:_HEADER + size]
                    self._handle(w, message)
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
        if kind == 0:
            w.ready.set()
            return
        with self._cond:
            if not self._busy(w):
                return  # a stray frame after close() gave up on the run
            if kind == 1:
                queue = self._queue[w.id]
                for stream, data in message[1]:
                    text = data.decode("utf-8")
                    self._outputs[w.id][stream - 1].append(text)
                    if self._streaming:
                        if queue and queue[-1][0] == stream:
                            queue[-1][1] += text
                        else:
                            queue.append([stream, text])
            else:
                _, value, error, value_format, wall, cpu = message
                self._finish(w, value, error, value_format, wall, cpu)

    def _died(self, w: _Worker) -> None:
        """Close w's task with a WorkerDied error (the engine's condition held)."""
        how = _how(w.returncode)
        message = (f"the worker's process died ({how}) while running this cell; "
                   "the next run starts a new one in its place, without the variables it had")
        error = ("ipy_parallel.process.WorkerDied", message, f"ipy_parallel.process.WorkerDied: {message}\n",
                 pickle.dumps(WorkerDied(message)))
        self._finish(w, None, error, 0, time.perf_counter() - self._task_start, 0.0)

    def _busy(self, w: _Worker) -> bool:
        """w has a task of the current run and has not answered it (the condition held)."""
        return self._running and self._results[w.id] is None

    def _finish(self, w: _Worker, value, error, value_format, wall, cpu) -> None:
        out, err = self._outputs[w.id]
        self._results[w.id] = (w.id, value, "".join(out), "".join(err), error, wall, cpu, value_format)
        self._pending -= 1
        if self._pending == 0:
            self._cond.notify_all()


def _frame(message) -> bytes:
    data = marshal.dumps(message)
    return len(data).to_bytes(_HEADER, "little") + data


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
