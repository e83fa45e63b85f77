"""One worker process of ProcessPool: the runtime every worker runs (ipy_parallel._wire), over pipes.

Started by the parent as ``python -P worker.py CMD_FD REPLY_FD LIFELINE_FD INTERRUPT``: run by path, so
that the package's modules load only as the runtime needs them. The frames both ways are the
protocol's (ipy_parallel/_wire/protocol.py); output is gathered for up to 20 ms per frame.
"""

import _thread
import builtins
import os
import signal
import sys
import time
from os import _exit, read as _read, write as _write

# Builtins of its own, and the functions it needs bound above, both before anything is defined:
# the cells run in this process, and one that patches builtins, marshal or os (builtins.len =
# None, os.write = ...) must not break the loop that runs them and talks to the parent (its
# frames are the shipped protocol's, which has builtins of its own and binds marshal as it loads).
__builtins__ = dict(builtins.__dict__)

_FLUSH_DELAY = 0.02  # seconds output may wait to be sent with the writes that follow it
_FLUSH_SIZE = 1 << 16  # characters of output that are sent at once
_REPORT_EVERY = 0.1  # seconds between a task's positions in its worker.progress(), if it has one

_running = False  # a cell is executing: an interrupt raises KeyboardInterrupt in it
_sending = False  # the main thread is writing a frame: an interrupt must wait, or the stream is corrupt
_pending = False  # an interrupt that arrived while _sending, raised once the frame is out
_interrupted = False  # this task was interrupted: it sleeps no more (as in a sub-interpreter)
_reply_fd = -1
_MAIN = _thread.get_ident()
_real_sleep = time.sleep  # the runtime replaces time.sleep with _sleep, which may raise


def _own_protocol():
    """This package's protocol.py, loaded by path: the start message must be read before sys.path
    can find the package. Only until install() ships the protocol in: a cell may patch the builtins
    this copy shares, never the shipped copy's own."""
    path = os.path.abspath(os.path.join(__file__, "..", "..", "..", "_wire", "protocol.py"))
    module = type(sys)("_ipy_parallel_protocol")
    with open(path, encoding="utf-8") as f:
        exec(compile(f.read(), path, "exec"), module.__dict__)
    return module


_protocol = _own_protocol()

# Output is gathered for up to _FLUSH_DELAY and sent by the flusher thread: a frame (and a wake-up
# of the parent's reader) per write made print-heavy cells ten times slower. Lock order:
# _send_lock, then _out_lock; _emit takes only _out_lock, so a write never waits for the pipe.
_send_lock = _thread.allocate_lock()  # one frame at a time on the reply pipe, in order
_out_lock = _thread.allocate_lock()
_out = []  # (stream, text) written and not yet sent
_out_size = 0
_wake = _thread.allocate_lock()  # held while the flusher has nothing to send
_wake.acquire()
_task_started = _thread.allocate_lock()  # held while the reporter waits for a task
_task_started.acquire()


def _ignore(signum, frame):
    pass


def _on_interrupt(signum, frame):
    # Only a running task is interrupted: one that comes after its task ended must not end the
    # task loop.
    global _pending, _interrupted
    if not _running:
        return
    _interrupted = True
    if _sending:
        _pending = True
        return
    raise KeyboardInterrupt


def _sleep(seconds):
    """time.sleep for the cells: once the task is interrupted, a cell that caught the
    KeyboardInterrupt and sleeps again is interrupted again at once, as a sub-interpreter's is."""
    if _interrupted and _running:
        raise KeyboardInterrupt
    _real_sleep(seconds)


def _write_frame(message):
    view = memoryview(_protocol.frame(message))
    try:
        while view:
            view = view[_write(_reply_fd, view) :]
    except OSError:  # the parent is gone: nobody to work for
        _exit(1)


def _flush_locked():
    """Send the gathered output as one frame (_send_lock held)."""
    global _out, _out_size
    with _out_lock:
        chunks, _out, _out_size = _out, [], 0
    if not chunks:
        return
    joined = []  # consecutive writes to one stream become one chunk
    for stream, text in chunks:
        if joined and joined[-1][0] == stream and stream != _protocol.PROGRESS:  # positions stay apart
            joined[-1][1].append(text)
        else:
            joined.append((stream, [text]))
    # As the sub-interpreters' output: UTF-8, a lone surrogate shown as its escape.
    encoded = [(stream, "".join(texts).encode("utf-8", "backslashreplace")) for stream, texts in joined]
    _write_frame((_protocol.OUTPUT, encoded))


def _send(final=None):
    """Flush the output, then send ``final`` if given. From the main thread, an interrupt that
    arrives meanwhile is held back until the frames are out (then raised if a cell runs)."""
    global _sending, _pending
    main = _thread.get_ident() == _MAIN
    if main:
        _sending = True
    try:
        with _send_lock:
            _flush_locked()
            if final is not None:
                _write_frame(final)
    finally:
        if main:
            _sending = False
    if main and _pending and _running:
        _pending = False
        raise KeyboardInterrupt


def _emit(stream, text):
    global _out_size
    with _out_lock:
        _out.append((stream, text))
        _out_size += len(text)
        first, full = len(_out) == 1, _out_size >= _FLUSH_SIZE
    if full:
        _send()
    elif first:
        try:
            _wake.release()
        except RuntimeError:  # already awake
            pass


def _flusher():
    while True:
        _wake.acquire()
        _real_sleep(_FLUSH_DELAY)
        with _send_lock:
            _flush_locked()


def _reporter():
    """While a task runs, has the runtime emit its position, if it has a progress, every
    _REPORT_EVERY seconds (it goes with the output). Waits on _task_started between tasks."""
    report = None
    while True:
        _task_started.acquire()
        if report is None:
            report = sys.modules["_ipy_parallel_runtime"].report_progress
        while _running:
            _real_sleep(_REPORT_EVERY)
            if _running:
                report()


def _read_exact(fd, n):
    chunks = []
    while n:
        chunk = _read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _receive(fd):
    header = _read_exact(fd, _protocol.FRAME_HEADER)
    if header is None:
        return None
    size = _protocol.frame_size(header)
    body = _read_exact(fd, size) if size else b""
    return None if body is None else _protocol.unframe(body)


def _watch_parent(fd):
    # Nobody ever writes to the lifeline: read() returns only when every copy of its write end is
    # closed, i.e. the parent closed the pool or died (even by SIGKILL). No orphans, ever.
    try:
        _read(fd, 1)
    finally:
        _exit(0)


def main():
    global _reply_fd, _running, _pending, _interrupted, _protocol
    cmd_fd, _reply_fd, lifeline_fd, interrupt = (int(a) for a in sys.argv[1:5])
    # The parent interrupts a task with its own signal (INTERRUPT); SIGINT comes to the whole
    # process group (a terminal's Ctrl-C, the notebook's stop button), meant for the kernel. A
    # handler that does nothing rather than SIG_IGN: an ignored signal stays ignored across
    # exec, and the processes a cell starts must keep the usual Ctrl-C.
    signal.signal(signal.SIGINT, _ignore)
    signal.signal(interrupt, _on_interrupt)

    # The helper threads block it, so that the kernel delivers it to the main thread, the one
    # that must interrupt the cell (and wake from time.sleep).
    signal.pthread_sigmask(signal.SIG_BLOCK, {interrupt})
    _thread.start_new_thread(_watch_parent, (lifeline_fd,))
    _thread.start_new_thread(_flusher, ())
    _thread.start_new_thread(_reporter, ())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {interrupt})

    init = _receive(cmd_fd)
    if init is None:
        return
    worker_id, n_workers, path, cwd = init
    sys.path[:] = path
    try:
        os.chdir(cwd)
    except OSError:
        pass

    # The cells' namespace is a fresh __main__, as in a sub-interpreter; this script's own
    # globals stay out of the user's way (and out of reset()'s).
    import builtins
    import types

    this = sys.modules["__main__"]
    main_module = types.ModuleType("__main__")
    main_module.__builtins__ = builtins
    sys.modules["__main__"] = main_module
    sys.modules["_ipp_process_worker"] = this  # keeps this module's globals alive

    from ipy_parallel._wire import install, shipped_sources  # after sys.path: found where the parent found it

    runtime = install(shipped_sources())
    _protocol = sys.modules["_ipy_parallel_protocol"]
    # flush: sys.stdout.flush() (print(..., flush=True)) sends the output at once, not within
    # 20 ms, so that what a cell flushed reaches the parent even if its process then dies.
    # hide: this file's frames (the interrupt handler, the sleep that raised) are not the cell's.
    run = runtime.setup(worker_id, n_workers, _emit, _sleep, backend="process", hide=(__file__,), flush=_send)
    saved_streams = sys.stdout, sys.stderr
    _send((_protocol.READY, os.getpid()))

    while True:
        task = _receive(cmd_fd)
        if task is None:
            return  # the parent closed the pool
        (source, filename, payload), task_cwd = task
        if task_cwd != cwd:
            try:
                os.chdir(task_cwd)
                cwd = task_cwd
            except OSError:
                pass
        wall, cpu = time.perf_counter(), time.process_time()
        _pending = _interrupted = False
        # Again before each task: an earlier cell may have replaced them.
        signal.signal(signal.SIGINT, _ignore)
        signal.signal(interrupt, _on_interrupt)
        _running = True
        try:
            _task_started.release()
        except RuntimeError:  # the reporter has not taken the last one yet: it will see this task
            pass
        try:
            reply = run(source, filename, payload)
            _running = False
        except KeyboardInterrupt:
            # An interrupt between the cell's end and the line above: in the runtime's own code,
            # outside the cell's try. The run was being stopped anyway.
            _running = False
            sys.stdout, sys.stderr = saved_streams
            reply = _protocol.interrupted_reply()
        _send((_protocol.DONE, reply, time.perf_counter() - wall, time.process_time() - cpu))


if __name__ == "__main__":
    main()
