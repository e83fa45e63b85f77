"""The wire formats between the main interpreter and its workers, defined once for every backend.

Imported as ipy_parallel._wire.protocol in the main interpreter, and shipped into every worker
(sub-interpreter, process, ipyparallel engine) as the module ``_ipy_parallel_protocol`` (see
ipy_parallel._wire). It imports only marshal, a builtin, so a worker pays nothing for it (and
pickle only to report an interrupt). The C++ engine reads a reply and writes a result record in
the same shapes (native/worker.cpp, native/bindings.cpp); tests/test_protocol.py holds all of
them to this file.

task          (source, filename, payload)
  source      the cell's text, or an operation of the runtime (RESET, PULL, RESIZE): a string that begins
              with NUL, which no Python source can
  filename    what tracebacks and linecache call the source
  payload     None, or pack_payload(path, parts, targets): marshal((sys.path to follow or None,
              [(pickled dict of names to values or None, names of lent inputs), ...], targets)),
              the parts bound in order (a later one overrides an earlier); targets: None (the
              run is every worker's) or the run's worker ids: a worker not among them follows
              the path and replies at once, and the run's barrier is the targets' alone
lent          the objects a sub-interpreter's parts name, in their order, handed over by the C++
              engine without pickling: a bytes or str of LEND_MIN or more is copied once into
              the worker; any other contiguous buffer (memoryview, bytearray, array.array, mmap)
              arrives as a read-only memoryview of the main interpreter's memory (no copy); a worker
              thread of the main interpreter (the threads backend) is lent every input, as it is
reply         (value, error, value_format): what the runtime's run() returns for a task
  value       None, or the value of the cell's last expression, marshalled (MARSHAL), pickled
              (PICKLE) or, in a sub-interpreter, a bytes of LEND_MIN or more as it is (RAW: the
              engine copies it once into the main interpreter); from a worker thread of the main
              interpreter (the threads backend), any value as it is (RAW: the object itself)
  error       None, or an error record
error record  ERROR_FIELDS: (type_name, message, traceback, pickled exception or None); its texts
              are valid UTF-8
result record RESULT_FIELDS: (worker_id, value, stdout, stderr, error, wall_time, cpu_time,
              value_format), what an engine's collect() gives for each worker

The process backend's pipes (backends/process: engine.py in the parent, worker.py in each worker
process) carry frames both ways: frame(message), a FRAME_HEADER-byte little-endian length, then
the message marshalled.
  parent -> worker  (worker_id, n_workers, sys.path, cwd) once, then (task, cwd) per run; end of
                    file means "exit"
  worker -> parent  (READY, pid) once ready; (OUTPUT, [(stream, utf-8 bytes), ...]) for output to
                    stdout (1) and stderr (2), and positions (PROGRESS), during a run; (DONE,
                    reply, wall, cpu) at the end of a run, after all its output

progress      a worker's position in its worker.progress(): emitted as the stream PROGRESS,
              progress_text(done, total), whenever the engine asks (at each display tick) and
              once as its task ends; never one per item

SubinterpreterExecutor's messages (ipy_parallel.executor, and ipy_parallel.worker.serve_executor in
its workers) go through the engine's named queues, marshalled:
  call              executor_call(task_id, function_id, pickled (args, kwargs) or list of args, many);
                    EXECUTOR_END ends a worker's loop
  answer            executor_answer(task_id, worker_id, ok, pickled value or exception, traceback)
"""

from marshal import dumps as _marshal, loads as _unmarshal  # bound now: a cell may patch the module

# The C++ engine's numbers for these formats are generated from this file when it is built
# (CMakeLists.txt writes wire_formats.h): change them here, and the engine follows.
PICKLE, MARSHAL, RAW = 0, 1, 2
REPLY_FIELDS = ("value", "error", "value_format")
RESULT_FIELDS = ("worker_id", "value", "stdout", "stderr", "error", "wall_time", "cpu_time", "value_format")
ERROR_FIELDS = ("type_name", "message", "traceback", "exception")  # exception: pickled, or None

# A bytes or str at least this long goes to a sub-interpreter, or comes back from one, by one
# copy of its memory instead of pickling (smaller ones are cheaper to pickle with the rest).
LEND_MIN = 64 << 10

# Operations of the runtime, sent as a task's source. They run the runtime's own code, never
# code looked up in the user's namespace, so a cell that shadows list or globals cannot break them.
RESET = "\0reset"  # clear the worker's variables (KEPT_NAMES stay)
PULL = "\0pull"  # the value: {name: value} for the names in the payload's "names" input that exist
RESIZE = "\0resize"  # the pool now has the payload's "n" workers: a RESET, and n_workers rebound

CONTEXT_MODULE = "_ipy_parallel_worker_context"  # who a worker is; read by ipy_parallel.worker
# What a reset leaves in a worker's namespace: the module's own names and what the runtime gave it.
KEPT_NAMES = ("__name__", "__doc__", "__package__", "__loader__", "__spec__", "__builtins__", "worker_id", "n_workers")
# Names the runtime binds in every worker before every task: inputs may not take them.
RESERVED = ("worker_id", "n_workers", "__builtins__")

# A task keeps at most this many characters of each stream; the rest is counted and noted at its
# end. A cell that prints a gigabyte must not take the kernel's memory, or a notebook's.
OUTPUT_LIMIT = 8 << 20


# The stream a worker's position goes on, beside stdout (1) and stderr (2): not output, never shown.
PROGRESS = 3


def progress_text(done, total):
    """A worker's position: items done, and of how many (None: not known)."""
    return f"{int(done)} {-1 if total is None else int(total)}"


def read_progress(text):
    """(done, total or None) from progress_text()."""
    done, total = text.split()
    total = int(total)
    return int(done), (None if total < 0 else total)


def dropped_note(stream_name, count):
    return (
        f"\n[ipy_parallel: {count} more characters of {stream_name} were dropped; a task keeps at most "
        f"{OUTPUT_LIMIT >> 20} Mi characters of each stream]\n"
    )


def pack_payload(path, parts, targets=None):
    """parts: [(pickled dict or None, names of lent inputs), ...]; targets: None or worker ids"""
    return _marshal(
        (path, [(blob, tuple(names)) for blob, names in parts], None if targets is None else tuple(targets))
    )


def unpack_payload(payload):
    """(path or None, [(pickled dict or None, names of lent inputs), ...], targets or None)"""
    path, parts, targets = _unmarshal(payload)
    return path, parts, targets


def error_record(type_name, message, traceback, pickled=None):
    return (_utf8(type_name), _utf8(message), _utf8(traceback), pickled)


def reply(value=None, error=None, value_format=PICKLE):
    return (value, error, value_format)


def result_record(worker_id, reply, stdout, stderr, wall_time, cpu_time):
    """The record an engine gives for one worker, from the runtime's reply and what the engine measured."""
    value, error, value_format = reply
    return (worker_id, value, stdout, stderr, error, wall_time, cpu_time, value_format)


def interrupted_error(message=""):
    """The error record of a task an interrupt stopped outside the cell, in the code that runs it:
    shown as a bare KeyboardInterrupt, as if the cell had raised it (the run was being stopped anyway)."""
    import pickle  # only here: a worker that is never interrupted this way never imports it

    return error_record("KeyboardInterrupt", message, "KeyboardInterrupt\n", pickle.dumps(KeyboardInterrupt()))


def interrupted_reply():
    return reply(None, interrupted_error())


FRAME_HEADER = 8
READY, OUTPUT, DONE = 0, 1, 2


def frame(message):
    data = _marshal(message)
    return len(data).to_bytes(FRAME_HEADER, "little") + data


def frame_size(header):
    """The length of the marshal blob that follows a frame's FRAME_HEADER bytes."""
    return int.from_bytes(header, "little")


def unframe(blob):
    return _unmarshal(blob)


# Functions an executor keeps pickled and shared with its workers, and each worker keeps unpickled.
EXECUTOR_FUNCTIONS_KEPT = 256
# Seconds a reader of the executor's queues (a worker, the collector) yields before it blocks: calls
# and answers come in bursts, the next often about one VM wake-up away.
EXECUTOR_SPIN = 50e-6
EXECUTOR_END = _marshal(None)


def executor_call(task_id, function_id, arguments, many):
    return _marshal((task_id, function_id, arguments, many))


def executor_answer(task_id, worker_id, ok, blob, traceback):
    return _marshal((task_id, worker_id, ok, blob, traceback))


def read_executor_message(blob):
    """A call, an answer, or None for EXECUTOR_END, as the tuple it was made from."""
    return _unmarshal(blob)


# An ImportError of a module that cannot load in a sub-interpreter (single-phase initialization)
# begins so, whoever raises it (a cell's worker, an executor's call); the package comes first.
NOT_ISOLATED = " cannot be imported in a sub-interpreter: "


def not_isolated_package(message):
    """The package an ImportError's message says cannot be imported in a sub-interpreter, or None."""
    head, found, _ = str(message).partition(NOT_ISOLATED)
    return head if found and head and all(part.isidentifier() for part in head.split(".")) else None


def _utf8(text):
    """``text`` as a str that encodes to UTF-8: a lone surrogate (from a file name, a bad decode)
    becomes its escape, so no reader of the record fails on it."""
    text = str(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
