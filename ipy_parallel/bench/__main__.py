"""`python -m ipy_parallel.bench --contestants`: the helper process of %native_bench and the benchmark suite."""

import sys

from .helper import serve

if sys.argv[1:] != ["--contestants"]:
    sys.exit("usage: python -m ipy_parallel.bench --contestants (the helper process of %native_bench)")
serve()
