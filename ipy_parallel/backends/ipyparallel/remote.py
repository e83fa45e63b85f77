"""What runs on each ipyparallel engine: the worker runtime's setup, a task with interrupts and live CPU figures, and reset's keep-list.

Shipped to the engines as the module ``_ipy_parallel_engine`` after the runtime's modules (see
ipy_parallel._wire), never imported there through ipy_parallel: an engine may be a machine where
ipy_parallel is not installed. The client side imports this file only for its constants.

- The runtime works in the engine's ``__main__``, which on an engine is its IPython user
  namespace: variables persist between runs and are the ones ``%px`` and ``view.pull`` see.
- Output: the runtime's emit writes to the engine's own sys.stdout/stderr, which ipyparallel
  streams over IOPub while the engine runs.
- Interrupt: the client's signal reaches the engine through its nanny. Not SIGINT: ipykernel lets
  SIGINT raise KeyboardInterrupt during its whole handling of a request, and one that lands in
  its own code loses the reply (the run never ends) or ends the engine (both seen under racing
  interrupts). So the signal is SIGURG (its default action ignores it, and nothing on an engine
  sends it), turned into KeyboardInterrupt only while a task runs and ignored at any other time.
  The handler stays installed and reads a flag: switching handlers around the task does not
  hold, because signal.signal() runs the handlers of pending signals before it installs the new
  one, so an interrupt racing the task's end left the raising handler in place, and the next
  signal ended the engine between requests (seen on 3.14 under racing interrupts).
- CPU: what the engine process (all its threads) used since the run started there, published
  every 0.2 s over IOPub by a thread beside the run, and exact in the reply. The task's position
  in its worker.progress() goes with it, read by that thread.
"""

import signal
import sys
import threading
import time

SIGNAL = "SIGURG"
_SIGNUM = getattr(signal, SIGNAL)
CPU_KEY = "ipy_parallel_cpu"
PROGRESS_KEY = "ipy_parallel_progress"  # the task's position in its worker.progress(), if any
_PUBLISH_EVERY = 0.2
_APPLY_TEMP = ("_f", "_args", "_kwargs", "_result")  # the names of ipyparallel's apply requests

_run = None
_publisher = None
_running = False  # a task is running: only then does the signal raise KeyboardInterrupt
_streams = [None, None]  # the engine's sys.stdout/stderr during the current task
_position = None  # the current task's last position (the protocol's progress text), if it has a progress


def install(worker_id, n_workers):
    """Make this engine worker ``worker_id`` of ``n_workers``; returns its Python version."""
    global _run, _publisher
    runtime = sys.modules["_ipy_parallel_runtime"]
    # time.sleep stays as it is: on an engine the task runs on the main thread, where a signal ends it.
    _run = runtime.setup(worker_id, n_workers, _emit, None, backend="ipyparallel", hide=(__file__,), keep=_kept)
    if _publisher is None:
        _publisher = _Publisher()
    return sys.version_info[:3]


def _on_signal(signum, frame):
    # Its frame is in this file, which the runtime leaves out of the cell's traceback.
    if _running:
        raise KeyboardInterrupt


def _emit(fileno, text):
    global _position
    if fileno == sys.modules["_ipy_parallel_protocol"].PROGRESS:
        _position = text
        return
    stream = _streams[fileno - 1]
    if stream is not None:
        stream.write(text)


def _kept(name):
    """A reset keeps IPython's own names and the temporaries of the apply request running it
    (ipyparallel pops them afterwards)."""
    if name.startswith("_") and name.endswith(_APPLY_TEMP) and len(name) > 24:
        return True
    try:
        from IPython import get_ipython

        return name in get_ipython().user_ns_hidden
    except Exception:
        return False


def task(source, filename, payload):
    """Run one task of the protocol; returns (reply, wall seconds, CPU seconds, its last position
    or None)."""
    global _running, _position
    _position = None
    start_cpu, start = time.process_time(), time.perf_counter()
    streams = sys.stdout, sys.stderr  # ipykernel's streams, parented to this request
    try:
        try:
            _streams[:] = streams
            _publisher.begin(start_cpu)
            # Before each task, not once: an earlier cell may have replaced it. Until the first,
            # SIGURG's default action ignores it.
            signal.signal(_SIGNUM, _on_signal)
            _running = True
            reply = _run(source, filename, payload)  # raises only an interrupt
        finally:
            # A plain store first: no signal handler runs before it, and none raises after it.
            _running = False
            sys.stdout, sys.stderr = streams  # in case the interrupt came as the runtime swapped them
    except KeyboardInterrupt:  # it came in the runtime's own code, before or after the cell
        # The shipped protocol: ipy_parallel may not be installed on an engine.
        reply = sys.modules["_ipy_parallel_protocol"].interrupted_reply()
    _publisher.end()
    _streams[:] = [None, None]
    return reply, time.perf_counter() - start, time.process_time() - start_cpu, _position


class _Publisher:
    """A thread that sends this process's CPU time for the current task over IOPub every 0.2 s
    (a data_message, as ipyparallel.datapub.publish_data does, with the task's parent header
    held fixed, so that a late message cannot be taken for the next task's). One thread for
    the engine's life: starting one per task would cost each task a thread start."""

    def __init__(self):
        self._cond = threading.Condition()
        self._job = None
        try:
            from ipykernel.zmqshell import ZMQInteractiveShell
            from ipyparallel.serialize import serialize_object

            self._pub, self._serialize = ZMQInteractiveShell.instance().data_pub, serialize_object
        except Exception:
            self._pub = None  # no live CPU figures; replies still carry the exact one
            return
        threading.Thread(target=self._loop, name="ipy_parallel CPU", daemon=True).start()

    def begin(self, start_cpu):
        if self._pub is not None:
            with self._cond:
                self._job = (dict(self._pub.parent_header), start_cpu)
                self._cond.notify()

    def end(self):
        if self._pub is not None:
            with self._cond:
                self._job = None

    def _loop(self):
        pub = self._pub
        while True:
            with self._cond:
                while self._job is None:
                    self._cond.wait()
                job = self._job
                self._cond.wait(_PUBLISH_EVERY)
                if self._job is not job:
                    continue
            parent, start_cpu = job
            try:
                sys.modules["_ipy_parallel_runtime"].report_progress()  # sets _position, if it has a progress
            except Exception:
                pass
            data = {CPU_KEY: time.process_time() - start_cpu}
            if _position is not None:
                data[PROGRESS_KEY] = _position
            try:
                pub.session.send(
                    pub.pub_socket,
                    "data_message",
                    content={"keys": [CPU_KEY]},
                    parent=parent,
                    buffers=self._serialize(data),
                    ident=pub.topic,
                )
            except Exception:
                pass
