"""ipy_parallel: true parallelism for pure-Python code in one CPython process.

A warm pool of isolated sub-interpreters, each with its own GIL (PEP 684), driven by a C++
engine. Usable on its own (``Pool``, ``parallel``) or from IPython (``%load_ext ipy_parallel``,
then ``%%parallel N`` on a cell). IPython is imported only when the extension is loaded.
"""

from .pool import MAX_WORKERS, Pool, Result, Run, WorkerError
from .tasks import parallel

__all__ = ["Pool", "Run", "Result", "WorkerError", "parallel", "MAX_WORKERS",
           "load_ipython_extension", "unload_ipython_extension"]
__version__ = "0.1.0"


def load_ipython_extension(ipython) -> None:
    """%load_ext ipy_parallel: register %%parallel, %parallel_status and %parallel_reset."""
    from .magics import load

    load(ipython)


def unload_ipython_extension(ipython) -> None:
    """%unload_ext ipy_parallel: close the extension's pool and remove its magics."""
    from .magics import unload

    unload(ipython)
