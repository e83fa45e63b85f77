"""Cells that misbehave: each gives a clear message, the kernel survives, and the pool is usable after."""

import sysconfig
import threading

import pytest

from ipy_parallel.exceptions import ParallelError

WORKER_ERRORS = {
    "sys.exit": ("import sys\nsys.exit(3)", "SystemExit", "3"),
    "SystemExit": ("raise SystemExit('bye')", "SystemExit", "bye"),
    "recursion": ("def f():\n    return f()\nf()", "RecursionError", "maximum recursion depth exceeded"),
    "MemoryError": ("x = bytearray(10**15)", "MemoryError", ""),
    "os.fork": ("import os\nos.fork()", "RuntimeError", "fork not supported for isolated subinterpreters"),
    "daemon thread": (
        "import threading\nthreading.Thread(target=print, daemon=True).start()",
        "RuntimeError",
        "daemon threads are disabled",
    ),
    "readline": (
        "import readline",
        "ImportError",
        "readline cannot be imported in a sub-interpreter: its extension "
        "module readline does not support isolated sub-interpreters",
    ),
}


@pytest.mark.parametrize("source, type_name, message", WORKER_ERRORS.values(), ids=WORKER_ERRORS.keys())
def test_worker_errors_come_back_and_the_pool_goes_on(pool, source, type_name, message):
    results = pool.run(source)
    for r in results:
        assert r.error.type_name == type_name and message in r.error.message
    assert [r.value for r in pool.run("worker_id")] == [0, 1]


def test_numpy_import_says_why_and_what_to_do(ip, capsys):
    result = ip.run_cell("%%parallel 4\nimport numpy")
    assert isinstance(result.error_in_exec, ParallelError)
    out = capsys.readouterr().out
    assert out.count("Traceback") == 1 and "[workers 0-3]" in out  # once, not four walls
    assert (
        "ImportError: numpy cannot be imported in a sub-interpreter: its extension module "
        "numpy._core._multiarray_umath does not support isolated sub-interpreters"
    ) in out
    assert "%%parallel --backend process" in out and "troubleshooting" not in out
    # On a free-threaded CPython the threads backend runs numpy in parallel: it is offered first.
    assert ("%%parallel --backend threads" in out) == bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def test_threads_inside_a_worker(pool):
    source = (
        "import threading\nout = []\nts = [threading.Thread(target=lambda i=i: out.append(i * i)) "
        "for i in range(4)]\nfor t in ts: t.start()\nfor t in ts: t.join()\nsorted(out)"
    )
    assert [r.value for r in pool.run(source)] == [[0, 1, 4, 9]] * 2


@pytest.mark.parametrize(
    "line, body, message",
    [
        ("abc", "1", "an integer from 1 to 256"),
        ("0", "1", "an integer from 1 to 256"),
        ("-3", "1", "an integer from 1 to 256"),
        ("999", "1", "an integer from 1 to 256"),
        ("2 --nope", "1", "unrecognized arguments"),
        ("2", "", "empty"),  # IPython's own check comes first; run_cell_magic reaches ours (test_magics)
        ("2 --push missing", "1", "no variable 'missing'"),
        ("2 --push lock", "1", "'lock' (a lock) cannot be sent"),
        ("2 --scatter number", "1", "a int is not a sequence"),
        ("4 --scatter few", "1", "3 items cannot give each of the 4 workers a chunk"),
        ("2 --timeout 0", "1", "--timeout must be a positive number"),
    ],
)
def test_usage_errors(ip, line, body, message):
    ip.user_ns.update(lock=threading.Lock(), number=5, few=[1, 2, 3])
    result = ip.run_cell(f"%%parallel {line}\n{body}")
    assert not result.success and message in str(result.error_in_exec or result.error_before_exec)
    assert ip.run_cell_magic("parallel", "2", "worker_id") == [0, 1]


def test_a_package_whose_extension_cannot_load_is_named_by_the_package(pool, tmp_path, monkeypatch):
    # As dulwich or any package that imports its compiled part by another name: the user imported
    # the package, so the message names it, and the extension it could not load.
    package = tmp_path / "fancypkg"
    package.mkdir()
    (package / "__init__.py").write_text("from . import core\n")
    (package / "core.py").write_text("import readline  # a single-phase extension module\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    error = pool.run("import fancypkg")[0].error
    assert error.type_name == "ImportError"
    assert error.message.startswith(
        "fancypkg cannot be imported in a sub-interpreter: the extension module it "
        "loads, readline, does not support isolated sub-interpreters"
    )
    assert 'File "<cell-' in error.traceback and "import fancypkg" in error.traceback


@pytest.mark.parametrize(
    "line", ["2 --push worker_id", "2 --scatter n_workers", "2 -o worker_id", "2 --push __builtins__"]
)
def test_reserved_names_in_options_are_usage_errors(ip, line):
    ip.user_ns.update(worker_id=[1, 2], n_workers=[1, 2], __builtins__=__builtins__)
    result = ip.run_cell(f"%%parallel {line}\n1")
    assert "is set by ipy_parallel in every worker" in str(result.error_in_exec)
    assert ip.run_cell_magic("parallel", "2", "worker_id") == [0, 1]
