"""Cells that misbehave: each gives a clear message, the kernel survives, and the pool is usable after."""

import threading

import pytest

from ipy_parallel import bench
from ipy_parallel.errors import ParallelError

WORKER_ERRORS = {
    "sys.exit": ("import sys\nsys.exit(3)", "SystemExit", "3"),
    "SystemExit": ("raise SystemExit('bye')", "SystemExit", "bye"),
    "recursion": ("def f():\n    return f()\nf()", "RecursionError", "maximum recursion depth exceeded"),
    "MemoryError": ("x = bytearray(10**15)", "MemoryError", ""),
    "os.fork": ("import os\nos.fork()", "RuntimeError", "fork not supported for isolated subinterpreters"),
    "daemon thread": ("import threading\nthreading.Thread(target=print, daemon=True).start()", "RuntimeError",
                      "daemon threads are disabled"),
    "readline": ("import readline", "ImportError", "readline cannot be imported in a sub-interpreter: readline "
                 "uses single-phase initialization"),
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
    assert ("ImportError: numpy cannot be imported in a sub-interpreter: numpy (its extension module "
            "numpy._core._multiarray_umath) uses single-phase initialization") in out
    assert "%%parallel --backend process" in out and "troubleshooting" not in out


def test_threads_inside_a_worker(pool):
    source = ("import threading\nout = []\nts = [threading.Thread(target=lambda i=i: out.append(i * i)) "
              "for i in range(4)]\nfor t in ts: t.start()\nfor t in ts: t.join()\nsorted(out)")
    assert [r.value for r in pool.run(source)] == [[0, 1, 4, 9]] * 2


def test_a_hundred_megabytes_of_output_is_bounded(pool):
    before = bench.rss_bytes()
    results = pool.run("line = 'x' * 1023\nfor _ in range(100 * 1024):\n    print(line)")
    grown = (bench.rss_bytes() - before) / 2**20
    print(f"printed 100 MiB per worker; kept {len(results[0].stdout) / 2**20:.1f} MiB; RSS grew {grown:.1f} MiB")
    for r in results:
        assert 8 * 2**20 <= len(r.stdout) < 9 * 2**20
        assert r.stdout.endswith("more bytes of stdout were dropped; a task keeps at most 8 MiB of each stream]\n")
    assert grown < 100
    assert [r.stdout for r in pool.run("print('small')")] == ["small\n", "small\n"]


def test_output_cut_at_a_character_boundary(pool):
    results = pool.run("print('é' * (5 * 2**20))")  # 10 MiB of 2-byte characters
    text = results[0].stdout
    assert text.startswith("é" * 1000) and "more bytes of stdout were dropped" in text


@pytest.mark.parametrize("line, body, message", [
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
])
def test_usage_errors(ip, line, body, message):
    ip.user_ns.update(lock=threading.Lock(), number=5, few=[1, 2, 3])
    result = ip.run_cell(f"%%parallel {line}\n{body}")
    assert not result.success and message in str(result.error_in_exec or result.error_before_exec)
    assert ip.run_cell_magic("parallel", "2", "worker_id") == [0, 1]
