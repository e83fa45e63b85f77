"""The code each sub-interpreter worker runs: execute a cell, capture its output, pack its result.

The engine execs this file's source in every worker (it is never imported there, so a worker
never loads ipy_parallel or its C++ module) and calls setup() once. The function setup()
returns runs each task with the worker's own GIL held, and must never raise: everything the
cell does comes back as (value_pickle | None, error | None).
"""

import ast
import io
import linecache
import pickle
import sys
import traceback

_CODE_CACHE_SIZE = 128


def setup(worker_id, n_workers, emit):
    """Prepare this worker's namespace (its __main__) and return its run(source, filename, payload)."""
    import __main__

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
                return None, _pack_error(exc)
            finally:
                stdout.flush()
                stderr.flush()
        finally:
            sys.stdout, sys.stderr = saved
        if value is None:
            return None, None
        try:
            return _dumps(value), None
        except BaseException as exc:
            return None, _cannot_send(value, exc)

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


def _compile(source, filename):
    """Compile a cell like a notebook does: the value of a final expression is the result."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    tree = ast.parse(source, filename, "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = compile(ast.Expression(tree.body.pop().value), filename, "eval")
    return compile(tree, filename, "exec"), last


def _receive(payload, namespace):
    """Follow the main interpreter's sys.path, then bind the inputs it sent.

    The path travels outside the inputs, so it is applied even when an input cannot be
    rebuilt here (a module this worker cannot import, say).
    """
    path, blobs = pickle.loads(payload)
    if path is not None:
        sys.path[:] = path
    for blob in blobs:
        namespace.update(pickle.loads(blob))


def _dumps(obj):
    # cloudpickle sends functions and classes defined in this worker's __main__ by value; plain
    # pickle would send them by name and the main interpreter would find its own (or nothing).
    try:
        import cloudpickle
    except ImportError:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _type_name(exc_type):
    module = exc_type.__module__
    return exc_type.__qualname__ if module in ("builtins", "__main__") else f"{module}.{exc_type.__qualname__}"


def _user_traceback(tb):
    """Drop this file's frames from the front of a traceback: users see only their cell."""
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return tb


def _pack_error(exc):
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
    return "PicklingError", message, f"PicklingError: {message}\n", pickle.dumps(pickle.PicklingError(message))
