"""ipy_parallel: true parallelism for pure-Python code in one CPython process.

A warm pool of isolated sub-interpreters, each with its own GIL (PEP 684), driven by a C++
engine. Usable on its own (``Pool``, ``parallel``) or from IPython (``%load_ext ipy_parallel``).
"""

from .pool import MAX_WORKERS, Pool, Result, Run, WorkerError
from .tasks import parallel

__all__ = ["Pool", "Run", "Result", "WorkerError", "parallel", "MAX_WORKERS"]
__version__ = "0.1.0"
