"""The code every worker runs: execute a task, capture its output, pack its reply (see protocol.py).

Shipped into every worker as the module ``_ipy_parallel_runtime`` (ipy_parallel._wire), never
imported there through ipy_parallel, so a worker never loads the package or its C++ module for
it (but to excuse itself from the barrier of a run it is not a target of). The worker calls
setup() once per pool it serves; the function it returns runs each task with the worker's own GIL
held and never raises: everything the cell does comes back as a protocol reply. The engine calls
teardown() before it ends the interpreter, and recycle() before it keeps it for a later pool.
"""

# Every interpreter imports its own copy of each module, so a worker's start-up time and idle
# memory are what it imports. Builtins here (marshal: no import at all); _ast (260 KiB) when it
# compiles; _pickle (550 KiB), traceback and cloudpickle (13 ms, MiBs) only when a value,
# an error or a __main__-defined object needs them.
import builtins
import io
import linecache
import sys
from marshal import dumps as _marshal  # bound now: a cell may patch the module

import _ipy_parallel_protocol as protocol

_CODE_CACHE_SIZE = 128  # compiled cells kept (and their linecache entries); the oldest go first
_CODE_CACHE_BYTES = 4 << 20  # and about this much memory for them, per worker (by _size_of; ~8 MiB in all)
_PROTOCOL = 5
_FunctionType = type(lambda: None)
_OWN_FILES = {__file__, protocol.__file__}  # frames of these files never show in a cell's traceback
_fresh = None  # (builtins, __main__, its dict, recursion limit) before any cell ran: what recycle() restores
thread_contexts = {}  # thread id -> context, for workers that share an interpreter (setup()'s namespace)


def setup(
    worker_id,
    n_workers,
    emit,
    sleep,
    group=None,
    backend="subinterpreter",
    hide=(),
    keep=None,
    flush=None,
    namespace=None,
    route=None,
    barrier=None,
):
    """Prepare this worker's namespace (its __main__) and return its run(source, filename, payload).

    ``emit(stream, text)`` receives the cell's output (1 stdout, 2 stderr). ``sleep`` replaces
    time.sleep in this interpreter: the engine can end it at once on an interrupt, which it
    cannot do for time.sleep outside the main thread. ``group`` is the pool's id in the process,
    for the barrier its workers share (None: the workers do not share a process). ``hide``:
    more files whose frames tracebacks leave out; ``keep(name)``: true for more names a reset
    keeps; ``flush()``: called when a cell flushes sys.stdout or sys.stderr. ipy_parallel.worker
    reads who this worker is from the module registered here.

    ``namespace`` (a dict): the worker is one of several threads of an interpreter it shares
    (the threads backend: the kernel's own). It then works in that dict instead of __main__,
    and leaves alone what belongs to the whole interpreter: time.sleep and sys.stdout/stderr
    (the engine dispatches them by thread; ``route(stdout, stderr)`` gives it this worker's
    streams for the task, ``route(None, None)`` takes them back), the builtins module (a reset
    does not restore it) and the context module (kept in ``thread_contexts`` under the thread's
    id instead). Values and pulled variables come back as they are (RAW), never pickled.
    ``barrier``: the run's barrier among such threads (wait(rank, parties, timeout) and
    excuse(rank)), where no ``group`` gives the C++ one.
    """
    global _fresh
    import __main__
    import time

    shared = namespace is not None
    if _fresh is None and not shared:
        _fresh = dict(builtins.__dict__), __main__, dict(__main__.__dict__), sys.getrecursionlimit()
    if sleep is not None and not shared:
        time.sleep = sleep
    if backend == "subinterpreter":
        _warn_on_chdir()
    _OWN_FILES.update(hide)
    context = type(sys)(protocol.CONTEXT_MODULE)
    context.rank, context.size, context.group, context.backend = worker_id, n_workers, group, backend
    context.parties = n_workers  # the current run's workers: its barrier's parties
    context.barrier = barrier

    def excuse():
        """Not one of the run's targets: no party to the barrier its workers share."""
        if group is not None:
            from ipy_parallel import _engine

            _engine.barrier_excuse(group, worker_id)
        elif barrier is not None:
            barrier.excuse(worker_id)

    def stop_requested():
        """True once the pool asked this worker's current task to stop (an interrupt, a close),
        as opposed to a KeyboardInterrupt the task raised itself: its sleep then ends at once."""
        if sleep is None:
            return False
        try:
            sleep(0)
        except KeyboardInterrupt:
            return True
        return False

    context.stop_requested = stop_requested
    context.progress = None  # the current task's ipy_parallel.worker.progress(), once it makes one

    def report_progress():
        """Emit the current task's position on the PROGRESS stream, if it has a progress. Called
        when the engine asks (from another thread, or a pending call) and as the task ends."""
        tracker = context.progress
        if tracker is None:
            return
        try:
            text = protocol.progress_text(*tracker.position())
        except Exception:  # a position that cannot be read is one not shown, never a task's error
            return
        emit(protocol.PROGRESS, text)

    context.report_progress = report_progress
    if shared:
        import _thread

        thread_contexts[_thread.get_ident()] = context
    else:
        sys.modules[protocol.CONTEXT_MODULE] = context
        namespace = __main__.__dict__
    pristine_builtins = None if shared else _fresh[0]
    streams = [_Stream(emit, 1, "<stdout>", flush), _Stream(emit, 2, "<stderr>", flush)]
    compiled = _CompiledCells()

    def repair():
        # Whatever a cell did to its environment, the next one starts with it whole: its own
        # identity, the builtins module, and open output streams.
        namespace["worker_id"], namespace["n_workers"] = worker_id, n_workers
        namespace["__builtins__"] = builtins
        for i, stream in enumerate(streams):
            if stream.closed:
                streams[i] = _Stream(emit, stream.fileno(), stream.name, flush)

    raw = backend == "subinterpreter"  # the C++ engine copies a RAW value straight from this worker's memory

    def redirect(stdout, stderr):
        """Make the task's output this worker's; returns what undoes it."""
        if shared:
            route(stdout, stderr)
            return lambda: route(None, None)
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = stdout, stderr

        def restore():
            sys.stdout, sys.stderr = saved

        return restore

    def run(source, filename, payload, lent=()):
        try:
            return run_task(source, filename, payload, lent)
        except BaseException as failure:  # the runtime's own code failed: a cell broke what it relies on
            return protocol.reply(None, _last_resort(failure))

    def run_task(source, filename, payload, lent):
        repair()
        stdout, stderr = streams
        restore = redirect(stdout, stderr)
        context.progress = None
        try:
            try:
                operation = source.startswith("\0")
                context.parties = context.size
                if payload is not None:
                    received, targets = _receive(payload, worker_id, None if operation else namespace, lent)
                    if targets is not None:
                        context.parties = len(targets)
                    if received is None:  # not one of the run's targets
                        excuse()
                        return protocol.reply()
                if operation:
                    return _operation(source, received if payload is not None else {})
                try:
                    body, last = compiled.get(source, filename)
                except SyntaxError as exc:
                    raise exc.with_traceback(None) from None  # the parser's frames mean nothing to users
                exec(body, namespace)
                value = None if last is None else eval(last, namespace)
            except BaseException as exc:  # the cell's errors, KeyboardInterrupt and SystemExit included
                return protocol.reply(None, _pack_error(exc, filename))
            finally:
                if context.progress is not None:  # its last position, with its output
                    report_progress()
                stdout.finish()
                stderr.finish()
        finally:
            restore()
            repair()  # also after: on an ipyparallel engine the namespace is IPython's as well
        if shared:
            return protocol.reply(value, None, protocol.RAW)  # the same interpreter: the object itself
        if raw and type(value) is bytes and len(value) >= protocol.LEND_MIN:
            return protocol.reply(value, None, protocol.RAW)
        return _value_reply(value)

    def _operation(op, inputs):
        nonlocal n_workers
        if op == protocol.RESIZE:
            n_workers = context.size = inputs["n"]
            op = protocol.RESET  # a resized pool's workers all start afresh, as a new pool's would
        if op == protocol.RESET:
            for name in list(namespace):
                if name not in protocol.KEPT_NAMES and not (keep is not None and keep(name)):
                    del namespace[name]
            if not shared:  # shared, the builtins are the kernel's too: IPython adds to them
                for name in list(builtins.__dict__):  # what cells added to, or changed in, builtins goes too
                    if name not in pristine_builtins:
                        del builtins.__dict__[name]
                builtins.__dict__.update(pristine_builtins)
            repair()
            return protocol.reply()
        if op == protocol.PULL:
            names = inputs["names"]
            found = {name: namespace[name] for name in names if name in namespace}
            if shared:
                return protocol.reply(found, None, protocol.RAW)
            reply = _value_reply(found)
            if reply[1] is not None:  # name the variable that cannot travel
                for name, value in found.items():
                    try:
                        _dumps(value)
                    except BaseException as exc:
                        return protocol.reply(None, _cannot_send(value, exc, f"the variable {name!r}"))
            return reply
        return protocol.reply(
            None,
            protocol.error_record(
                "ValueError", f"unknown operation {op[1:]!r}", f"ValueError: unknown operation {op[1:]!r}\n"
            ),
        )

    return run


def report_progress():
    """This interpreter's worker reports its position (see setup()); for an engine that asks from
    outside the worker's own code: a sub-interpreter's pending call, a worker process's thread."""
    context = sys.modules.get(protocol.CONTEXT_MODULE)
    if context is not None and context.progress is not None:
        context.report_progress()


def teardown(timeout):
    """Before the engine ends this interpreter: give the threads cells started up to ``timeout``
    seconds to finish. True if none is left (ending the interpreter would otherwise join them
    forever, or abort the process)."""
    import _thread
    import time

    clock, pause = time.monotonic, _thread.allocate_lock()
    deadline = clock() + timeout
    threading = sys.modules.get("threading")
    if threading is not None:
        # Not current_thread(): for this thread, which threading did not start, it would make a
        # _DummyThread whose cleanup fails noisily as the interpreter ends.
        me, main = _thread.get_ident(), threading.main_thread()  # main: the process's, not ours to join
        for thread in threading.enumerate():
            if thread.ident != me and thread is not main and not thread.daemon:
                try:
                    thread.join(max(0.0, deadline - clock()))
                except Exception:  # a thread threading cannot join (not started by it)
                    pass
        # 3.13's threading takes the process's main thread for this interpreter's, so this thread,
        # once anything asked threading about it (logging does), has a _DummyThread that 3.13
        # deletes only with the thread state, after the module is gone ("Exception ignored in
        # _DeleteDummyThreadOnDel.__del__"). Let it go now, while threading is whole.
        local = getattr(threading, "_thread_local_info", None)
        if local is not None and hasattr(local, "_track_dummy_thread_ref"):
            del local._track_dummy_thread_ref
    while _thread._count() and clock() < deadline:  # _thread.start_new_thread ones: nothing to join
        pause.acquire()
        pause.acquire(timeout=0.01)  # a plain 10 ms wait, whatever time.sleep has become
        pause.release()
    return _thread._count() == 0


def recycle(timeout):
    """Before the engine keeps this interpreter for a later pool: teardown(), then the state a new
    worker starts with: ``__main__`` and builtins as they were before the first cell, no cell's
    lines in linecache, garbage collected. The modules cells imported stay, as they are (a new
    interpreter would import them again). True if it can be kept: no thread of a cell is left."""
    if _fresh is None:
        return False
    fresh_builtins, main, fresh_main, recursion_limit = _fresh
    builtins.__dict__.update(fresh_builtins)  # first: threading, which teardown() uses, relies on them
    if not teardown(timeout):
        return False
    for name in list(builtins.__dict__):  # once the cells' threads are done with them
        if name not in fresh_builtins:
            del builtins.__dict__[name]
    # What a cell may have set for this thread or interpreter, beside its namespace.
    sys.settrace(None)
    sys.setprofile(None)
    sys.setrecursionlimit(recursion_limit)
    sys.modules["__main__"] = main
    main.__dict__.clear()
    main.__dict__.update(fresh_main)
    linecache.clearcache()
    import gc

    gc.enable()
    gc.collect()
    return True


class _Stream(io.TextIOBase):
    """sys.stdout / sys.stderr of a worker: each write goes straight to the engine, up to the
    protocol's OUTPUT_LIMIT characters a task; the rest is counted and noted at the task's end."""

    def __init__(self, emit, fileno, name, on_flush=None):
        super().__init__()
        self._emit = emit
        self._on_flush = on_flush
        self._fileno = fileno
        self.name = name
        self._room = protocol.OUTPUT_LIMIT
        self._dropped = 0

    @property
    def encoding(self):
        return "utf-8"

    @property
    def errors(self):
        return "strict"

    def fileno(self):
        return self._fileno

    def writable(self):
        return True

    def write(self, text):
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        n = len(text)
        if n > self._room:
            self._dropped += n - self._room
            text = text[: self._room]
        if text:
            self._room -= len(text)
            self._emit(self._fileno, text)
        return n

    def flush(self):
        if self._on_flush is not None and not self.closed:
            self._on_flush()

    def finish(self):
        """The task ended: note what was dropped, and start counting again."""
        if self._dropped:
            self._emit(self._fileno, protocol.dropped_note(self.name.strip("<>"), self._dropped))
        self._room, self._dropped = protocol.OUTPUT_LIMIT, 0

    def isatty(self):
        return False


_PLAIN_TYPES = frozenset({type(None), bool, int, float, complex, str, bytes, tuple, list, dict, set, frozenset})
_PLAIN_LIMIT = 10_000  # items to check before leaving a large value to pickle


def _plain(value) -> bool:
    """True if marshal round-trips ``value`` exactly: only builtin scalars and containers, by
    exact type. (marshal would turn a bytearray or any buffer into bytes, and refuses
    subclasses; larger values go to pickle, whose import is then worth it.)"""
    stack, seen = [value], 0
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind not in _PLAIN_TYPES:
            return False
        seen += 1
        if seen > _PLAIN_LIMIT:
            return False
        if kind is dict:
            stack.extend(item.keys())
            stack.extend(item.values())
        elif kind in (tuple, list, set, frozenset):
            stack.extend(item)
    return True


def _value_reply(value):
    if value is None:
        return protocol.reply()
    if _plain(value):
        try:
            return protocol.reply(_marshal(value), None, protocol.MARSHAL)  # no pickle to import, and faster
        except Exception:  # nested deeper than marshal goes: pickle may still manage
            pass
    try:
        return protocol.reply(_dumps(value), None, protocol.PICKLE)
    except BaseException as exc:
        return protocol.reply(None, _cannot_send(value, exc, "the result"))


def _compile(source, filename):
    """Compile a cell like a notebook does: the value of a final expression is the result."""
    import _ast

    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    tree = compile(source, filename, "exec", _ast.PyCF_ONLY_AST)
    last = None
    if tree.body and isinstance(tree.body[-1], _ast.Expr):
        last = compile(_ast.Expression(tree.body.pop().value), filename, "eval")
    return compile(tree, filename, "exec"), last


def _warn_on_chdir():
    """os.chdir in a sub-interpreter moves the working directory of the whole process: the
    notebook's and every other worker's. It still does, and says so once per worker."""
    import os

    chdir = getattr(os.chdir, "__wrapped__", os.chdir)  # a kept interpreter's: warn anew, do not wrap twice
    warned = False

    def chdir_and_warn(path):
        nonlocal warned
        chdir(path)
        if not warned:
            warned = True
            import warnings

            warnings.warn(
                "os.chdir() in a worker changes the working directory of the whole process, the "
                "notebook's and every other worker's (sub-interpreters share one process): use "
                "absolute paths instead",
                RuntimeWarning,
                stacklevel=2,
            )

    chdir_and_warn.__doc__, chdir_and_warn.__name__, chdir_and_warn.__wrapped__ = chdir.__doc__, chdir.__name__, chdir
    os.chdir = chdir_and_warn


class _CompiledCells:
    """The cells a worker has compiled, with their lines in linecache for tracebacks: a cell run
    again is not compiled again. Cells come under ever new names (In[1], In[2], ...), so the
    oldest go once there are _CODE_CACHE_SIZE of them or their memory passes _CODE_CACHE_BYTES:
    a few big cells must not grow every worker by their size times the count."""

    def __init__(self):
        self._cells = {}  # (source, filename) -> ((body, last), bytes), oldest first
        self._bytes = 0

    def get(self, source, filename):
        """The cell compiled (body, last expression or None); raises SyntaxError."""
        key = (source, filename)
        entry = self._cells.pop(key, None)
        if entry is None:
            code = _compile(source, filename)
            entry = code, _size_of(source, filename, code)
            self._bytes += entry[1]
        self._cells[key] = entry  # now the newest
        while len(self._cells) > 1 and (len(self._cells) > _CODE_CACHE_SIZE or self._bytes > _CODE_CACHE_BYTES):
            self._forget_oldest()
        return entry[0]

    def _forget_oldest(self):
        oldest = next(iter(self._cells))
        self._bytes -= self._cells.pop(oldest)[1]
        if all(filename != oldest[1] for _, filename in self._cells):
            linecache.cache.pop(oldest[1], None)


def _size_of(source, filename, code):
    """About the memory a compiled cell keeps: its text (the key), its lines in linecache (one
    object each: a cell of short lines costs several times its text), its code objects."""
    lines = linecache.cache.get(filename, (0, None, ()))[2]
    return (
        sys.getsizeof(source)
        + sys.getsizeof(lines)
        + sum(map(sys.getsizeof, lines))
        + sum(sys.getsizeof(c) for c in code if c is not None)
    )


def _receive(payload, rank, namespace=None, lent=()):
    """Follow the main interpreter's sys.path, then bind the inputs it sent, pickled and lent, in
    ``namespace`` (or, without one, in a new dict); return that (None for a worker that is not
    one of the run's targets: it binds nothing and runs nothing) and the targets (None: all).

    The path travels outside the inputs, so it is applied even when an input cannot be
    rebuilt here (a module this worker cannot import, say).
    """
    path, parts, targets = protocol.unpack_payload(payload)
    if path is not None:
        sys.path[:] = path
    if targets is not None and rank not in targets:
        return None, targets
    target = {} if namespace is None else namespace
    lent = iter(lent)
    for blob, names in parts:
        if blob is not None:
            import _pickle

            target.update(_pickle.loads(blob))
        for name in names:
            target[name] = next(lent)
    return target, targets


class _DefinedHere(Exception):
    pass


_pickler_class = None


def _pickler():
    """Plain pickle that refuses functions and classes of this worker's __main__: pickle would
    send them by name, and the main interpreter would find its own (or nothing). Made on first
    use, so that a worker that never pickles never imports _pickle."""
    global _pickler_class
    if _pickler_class is None:
        import _pickle

        class _Pickler(_pickle.Pickler):
            def reducer_override(self, obj):  # not called for plain data (int, str, list, ...)
                if isinstance(obj, (type, _FunctionType)) and getattr(obj, "__module__", None) == "__main__":
                    raise _DefinedHere
                return NotImplemented

        _pickler_class = _Pickler
    return _pickler_class


def _dumps(obj):
    import _pickle

    buffer = io.BytesIO()
    try:
        _pickler()(buffer, protocol=_PROTOCOL).dump(obj)
        return buffer.getvalue()
    except _DefinedHere:
        pass
    try:
        import cloudpickle  # sends them by value
    except ImportError:
        return _pickle.dumps(obj, protocol=_PROTOCOL)
    return cloudpickle.dumps(obj, protocol=_PROTOCOL)


def _type_name(exc_type):
    module = exc_type.__module__
    return exc_type.__qualname__ if module in ("builtins", "__main__") else f"{module}.{exc_type.__qualname__}"


def _user_traceback(tb):
    """The traceback without the frames of our own files, wherever they are: the runtime above
    the cell, and what a backend puts below it (a signal handler, the sleep that raised)."""
    kept = []
    while tb is not None:
        if tb.tb_frame.f_code.co_filename not in _OWN_FILES:
            kept.append(tb)
        tb = tb.tb_next
    rebuilt = None
    for entry in reversed(kept):
        rebuilt = type(entry)(rebuilt, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return rebuilt


_NOT_ISOLATED = " does not support loading in subinterpreters"


def _not_isolated(exc):
    """The name of the extension module behind an ImportError (or its causes) raised because the
    module cannot load in an isolated interpreter, or None. Packages wrap that error in their own
    (numpy: a page about a broken install); the original is somewhere in the chain."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ImportError):
            text = str(exc)
            if text.startswith("module ") and text.endswith(_NOT_ISOLATED):
                return text[len("module ") : -len(_NOT_ISOLATED)]
        exc = exc.__cause__ or exc.__context__
    return None


def _imported_package(tb, filename):
    """The top-level package the cell was importing when this traceback was made: the module of
    the first frame after the cell's own, or None when the cell itself imported the extension."""
    after_cell = False
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == filename:
            after_cell = True
        elif after_cell and not code.co_filename.startswith("<frozen "):
            name = tb.tb_frame.f_globals.get("__name__")
            if isinstance(name, str) and name and name != "__main__":
                return name.split(".")[0]
        tb = tb.tb_next
    return None


def _cannot_import(top, what):
    return (
        f"{top}{protocol.NOT_ISOLATED}{what} does not support isolated sub-interpreters "
        "(it uses single-phase initialization, or declares itself unsafe there)."
    )


def not_isolated_error(exc, advice):
    """For an exception whose chain holds CPython's refusal to load an extension module in this
    sub-interpreter: an ImportError (name: the package) that says so plainly, then ``advice``;
    else None. What an executor's call raises instead of the package's own wrapper, which
    pickling would keep without its cause (numpy's: a page about a broken install)."""
    module = _not_isolated(exc)
    if module is None:
        return None
    top = module.split(".")[0]
    return ImportError(f"{_cannot_import(top, f'its extension module {module}')} {advice}", name=top)


def _explain_not_isolated(exc, module, filename):
    import traceback

    top = _imported_package(exc.__traceback__, filename) or module.split(".")[0]
    own = top == module.split(".")[0]
    what = f"its extension module {module}" if own else f"the extension module it loads, {module},"
    import sysconfig

    if sysconfig.get_config_var("Py_GIL_DISABLED"):  # free-threaded: plain threads run it in parallel
        instead = (
            "on threads of the main interpreter instead, which this free-threaded CPython runs in parallel: "
            "%%parallel --backend threads (or ipy_parallel.ThreadPool outside IPython), or on worker "
            "processes: %%parallel --backend process"
        )
    else:
        instead = (
            "on worker processes instead: %%parallel --backend process (or %parallel_config --fallback on, "
            "to do that by itself), or ipy_parallel.ProcessPool outside IPython"
        )
    message = f"{_cannot_import(top, what)} Run the cell {instead}."
    frames = traceback.extract_tb(_user_traceback(exc.__traceback__), limit=1)  # the cell's line
    text = "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames)) + f"ImportError: {message}\n"
    try:
        pickled = _dumps(ImportError(message, name=top))
    except BaseException:
        pickled = None
    return protocol.error_record("ImportError", message, text, pickled)


def _pack_error(exc, filename):
    import traceback

    module = _not_isolated(exc)
    if module is not None:
        return _explain_not_isolated(exc, module, filename)
    exc.__traceback__ = _user_traceback(exc.__traceback__)
    try:
        text = "".join(traceback.format_exception(exc))
    except BaseException as fmt_exc:  # a broken __str__ must not lose the error itself
        text = f"{_type_name(type(exc))}: <traceback could not be formatted: {fmt_exc!r}>\n"
    try:
        message = str(exc)
    except BaseException:
        message = "<str() of the exception failed>"
    try:
        pickled = _dumps(exc)
    except BaseException:
        pickled = None
    return protocol.error_record(_type_name(type(exc)), message, text, pickled)


def _last_resort(failure):
    """An error record for a failure of the runtime itself, made without importing anything."""
    try:
        said = str(failure)
    except BaseException:
        said = "<str() failed>"
    message = (
        f"the worker could not run the task: {type(failure).__name__}: {said} (a cell may have broken "
        "something the worker relies on, such as the builtins module: %parallel_reset restores them)"
    )
    return protocol.error_record(type(failure).__name__, message, f"{type(failure).__name__}: {message}\n")


def _cannot_send(value, exc, what):
    import _pickle

    kind = _type_name(type(value))
    message = f"{what}, of type {kind}, cannot be sent back to the main interpreter: {exc}"
    return protocol.error_record(
        "PicklingError", message, f"PicklingError: {message}\n", _pickle.dumps(_pickle.PicklingError(message))
    )
