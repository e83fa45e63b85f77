"""The code each sub-interpreter worker runs: execute a cell, capture its output, pack its result.

The engine execs this file's code in every worker (it is never imported there, so a worker
never loads ipy_parallel or its C++ module) and calls setup() once. The function setup()
returns runs each task with the worker's own GIL held, and must never raise: everything the
cell does comes back as (value | None, error | None, value_format), the value marshalled
(format 1) when marshal can hold it, else pickled (format 0).
"""

# Every interpreter imports its own copy of each module, so a worker's start-up time and idle
# memory are what it imports. Builtins here (marshal: no import at all); _ast (260 KiB) when it
# compiles; _pickle (550 KiB), traceback and cloudpickle (13 ms, MiBs) only when a value,
# an error or a __main__-defined object needs them.
import io
import linecache
import marshal
import sys

CONTEXT_MODULE = "_ipy_parallel_worker_context"  # who this worker is; read by ipy_parallel.worker
_CODE_CACHE_SIZE = 128
_PROTOCOL = 5
_FunctionType = type(lambda: None)


def setup(worker_id, n_workers, emit, sleep, group=None, backend="subinterpreter"):
    """Prepare this worker's namespace (its __main__) and return its run(source, filename, payload).

    ``sleep`` replaces time.sleep in this interpreter: the engine can end it at once on an
    interrupt, which it cannot do for time.sleep outside the main thread. ``group`` is the
    pool's id in the process, for the barrier its workers share (None: the workers do not
    share a process, so there is none). ipy_parallel.worker reads these from the module
    registered here, without the runtime importing anything for it.
    """
    import __main__
    import time

    if sleep is not None:
        time.sleep = sleep
    context = type(sys)(CONTEXT_MODULE)
    context.rank, context.size, context.group, context.backend = worker_id, n_workers, group, backend
    sys.modules[CONTEXT_MODULE] = context

    namespace = __main__.__dict__
    namespace["worker_id"] = worker_id
    namespace["n_workers"] = n_workers
    stdout, stderr = _Stream(emit, 1, "<stdout>"), _Stream(emit, 2, "<stderr>")
    compiled = {}

    def run(source, filename, payload):
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = stdout, stderr
        try:
            try:
                if payload is not None:
                    _receive(payload, namespace)
                key = (source, filename)
                code = compiled.get(key)
                if code is None:
                    if len(compiled) >= _CODE_CACHE_SIZE:
                        compiled.clear()
                    try:
                        code = compiled[key] = _compile(source, filename)
                    except SyntaxError as exc:
                        raise exc.with_traceback(None) from None  # the parser's frames mean nothing to users
                body, last = code
                exec(body, namespace)
                value = None if last is None else eval(last, namespace)
            except BaseException as exc:  # the cell's errors, KeyboardInterrupt and SystemExit included
                return None, _pack_error(exc), 0
            finally:
                stdout.flush()
                stderr.flush()
        finally:
            sys.stdout, sys.stderr = saved
        if value is None:
            return None, None, 0
        if _plain(value):
            return marshal.dumps(value), None, 1  # no pickle to import, and faster
        try:
            return _dumps(value), None, 0
        except BaseException as exc:
            return None, _cannot_send(value, exc), 0

    return run


class _Stream(io.TextIOBase):
    """sys.stdout / sys.stderr of a worker: each write goes straight to the engine's buffer."""

    def __init__(self, emit, fileno, name):
        super().__init__()
        self._emit = emit
        self._fileno = fileno
        self.name = name

    @property
    def encoding(self):
        return "utf-8"

    @property
    def errors(self):
        return "strict"

    def writable(self):
        return True

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if text:
            self._emit(self._fileno, text)
        return len(text)

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


def _compile(source, filename):
    """Compile a cell like a notebook does: the value of a final expression is the result."""
    import _ast

    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    tree = compile(source, filename, "exec", _ast.PyCF_ONLY_AST)
    last = None
    if tree.body and isinstance(tree.body[-1], _ast.Expr):
        last = compile(_ast.Expression(tree.body.pop().value), filename, "eval")
    return compile(tree, filename, "exec"), last


def _receive(payload, namespace):
    """Follow the main interpreter's sys.path, then bind the inputs it sent.

    The path travels outside the inputs, so it is applied even when an input cannot be
    rebuilt here (a module this worker cannot import, say).
    """
    path, blobs = marshal.loads(payload)
    if path is not None:
        sys.path[:] = path
    if blobs:
        import _pickle

        for blob in blobs:
            namespace.update(_pickle.loads(blob))


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
    """Drop this file's frames from the front of a traceback: users see only their cell."""
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return tb


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
                return text[len("module "):-len(_NOT_ISOLATED)]
        exc = exc.__cause__ or exc.__context__
    return None


def _explain_not_isolated(exc, module):
    import traceback

    top = module.split(".")[0]
    where = "" if module == top else f" (its extension module {module})"
    message = (f"{top} cannot be imported in a sub-interpreter: {top}{where} uses single-phase "
               "initialization, which CPython refuses in an isolated interpreter because such modules "
               "are not sub-interpreter safe. Run the cell on worker processes instead: %%parallel --backend "
               "process (or %parallel_config --fallback on, to do that by itself), or "
               "ipy_parallel.process.ProcessPool outside IPython.")
    frames = traceback.extract_tb(_user_traceback(exc.__traceback__), limit=1)  # the cell's line
    text = "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames)) + f"ImportError: {message}\n"
    try:
        pickled = _dumps(ImportError(message, name=top))
    except BaseException:
        pickled = None
    return "ImportError", message, text, pickled


def _pack_error(exc):
    import traceback

    module = _not_isolated(exc)
    if module is not None:
        return _explain_not_isolated(exc, module)
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
    return _type_name(type(exc)), message, text, pickled


def _cannot_send(value, exc):
    kind = _type_name(type(value))
    message = f"the result, of type {kind}, cannot be sent back to the main interpreter: {exc}"
    import _pickle

    return "PicklingError", message, f"PicklingError: {message}\n", _pickle.dumps(_pickle.PicklingError(message))
