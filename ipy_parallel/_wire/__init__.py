"""What crosses into a worker: the modules every worker runs, shipped as code, and how a worker installs them.

Workers never import these through ipy_parallel (a sub-interpreter would load the package and
its C++ module for nothing; an ipyparallel engine may not have it installed): each backend ships
them and installs them under flat names, in order, so that a later one can import an earlier:

  _ipy_parallel_protocol   protocol.py, the wire formats
  _ipy_parallel_runtime    runtime.py, which runs the tasks; its setup() starts a worker

A backend may ship more after these (the ipyparallel engine's own module). The filenames the
modules get ("<ipy_parallel runtime>", ...) are what tracebacks would show; the runtime leaves
their frames out.
"""

from __future__ import annotations

import marshal
import os
import pickle

__all__ = ["SHIPPED", "RUNTIME", "shipped_sources", "marshalled", "install", "call", "dumps"]

RUNTIME = "_ipy_parallel_runtime"
SHIPPED = (("_ipy_parallel_protocol", "protocol.py"), (RUNTIME, "runtime.py"))


def shipped_sources(extra: tuple[tuple[str, str, str], ...] = ()) -> list[tuple[str, str, str]]:
    """(module name, filename, source) of each shipped module, in install order, then ``extra``."""
    here = os.path.dirname(os.path.abspath(__file__))
    modules = []
    for name, file in SHIPPED:
        with open(os.path.join(here, file), encoding="utf-8") as f:
            modules.append((name, f"<ipy_parallel {file[:-3]}>", f.read()))
    return modules + list(extra)


def marshalled() -> bytes:
    """The shipped modules compiled here, for the C++ engine: marshal([(name, code), ...]).
    Unmarshalling in each worker is about ten times cheaper than compiling there."""
    return marshal.dumps([(name, compile(source, filename, "exec")) for name, filename, source in shipped_sources()])


def install(modules, function=None, *args):
    """In a worker that is a Python process of its own: run each (name, filename, source) as
    the module ``name`` (registered in sys.modules first, as import does, with a copy of the
    builtins of its own). Returns the last
    module, or, given ``function``, what that function of it returns for ``args`` (how an
    ipyparallel engine starts: the module itself could not travel back)."""
    import builtins
    import sys

    module = None
    for name, filename, source in modules:
        module = type(sys)(name)
        module.__file__ = filename
        # Builtins of its own: a cell that patches the builtins module must not break the code
        # that runs it (the C++ engine does the same).
        module.__builtins__ = dict(builtins.__dict__)
        sys.modules[name] = module
        exec(compile(source, filename, "exec"), module.__dict__)
    return module if function is None else getattr(module, function)(*args)


def call(module, function, *args):
    """Call ``function`` of the shipped module ``module`` in this worker."""
    import sys

    return getattr(sys.modules[module], function)(*args)


def dumps(item) -> bytes:
    """Pickle what travels between the interpreters of this process (a worker's queue item, an
    executor call's arguments or result): plain pickle when it can, which needs no import of
    cloudpickle and is faster; cloudpickle for what plain pickle would send by a reference the
    reader cannot follow (a function or class of ``__main__``, a lambda)."""
    try:
        blob = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
        if b"__main__" not in blob:  # a __main__ function or class would be rebuilt from the reader's own
            return blob
    except Exception:
        pass
    import cloudpickle

    return cloudpickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
