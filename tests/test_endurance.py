"""Long runs: thousands of cells without leaks, random cells against serial execution, shutdown while busy."""

import io
import os
import random
import time
from contextlib import redirect_stderr, redirect_stdout

from helpers import interpreters, soak, threads

from ipy_parallel import Pool, bench

SOAK = soak(int(os.environ.get("IPP_SOAK", "10000")))


def test_soak_ten_thousand_cells(ip):
    cells = [
        "x = worker_id",
        "print('hi', worker_id)",
        "[worker_id] * 3",
        "sum(range(100))",
        "if worker_id == 3:\n    raise ValueError('w3')\nworker_id",
        "d = {'k': 'ü' * 10}\nd",
    ]
    for i in range(300):  # warm up: imports, caches, allocator arenas
        ip.run_cell(f"%%parallel 4 --no-monitor\n{cells[i % len(cells)]}", silent=True)
    base_rss, base_threads, base_interps = bench.rss_bytes(), threads(), interpreters()
    start = time.perf_counter()
    for i in range(SOAK):
        ip.run_cell(f"%%parallel 4 --no-monitor\n{cells[i % len(cells)]}", silent=True)
    elapsed = time.perf_counter() - start
    grown = (bench.rss_bytes() - base_rss) / 2**20
    print(
        f"\nsoak: {SOAK:,} cells on a pool of 4 in {elapsed:.1f} s ({elapsed / SOAK * 1e3:.2f} ms a cell); "
        f"RSS grew {grown:.1f} MiB; threads {base_threads} -> {threads()}; "
        f"interpreters {base_interps} -> {interpreters()}"
    )
    assert grown < 20
    assert threads() == base_threads and interpreters() == base_interps


def test_no_thread_or_interpreter_outlives_its_pool_but_in_the_reserve():
    Pool.reserve(clear=True)
    base_threads, base_interps = threads(), interpreters()
    for n in (1, 3, 8):
        with Pool(n) as pool:
            pool.run("import threading\nt = threading.Thread(target=sum, args=([1],))\nt.start()\nt.join()")
            assert interpreters() == base_interps + n
        assert Pool.reserve()["kept"] == n  # each pool took the last one's workers, and gave all back
        assert threads() == base_threads + n and interpreters() == base_interps + n
    assert Pool.reserve(clear=True)["kept"] == 0
    assert threads() == base_threads and interpreters() == base_interps


# -- random cells, each checked against the same code run serially in a fresh namespace ---------

WORDS = ["alpha", "ünïcode", "日本語", "emoji 🙂", "tab\there", 'quote"s', ""]


def random_cell(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(1, 5)):
        kind = rng.choice(["print", "assign", "loop", "stderr", "branch"])
        if kind == "print":
            lines.append(f"print({rng.choice(WORDS)!r}, worker_id, {rng.randint(0, 99)})")
        elif kind == "assign":
            lines.append(
                f"v{rng.randint(0, 3)} = {rng.choice(['worker_id', '[1, 2]', repr(rng.choice(WORDS)), '3.5'])}"
            )
        elif kind == "loop":
            lines.append(f"acc = 0\nfor i in range({rng.randint(0, 2000)}):\n    acc += i * worker_id")
        elif kind == "stderr":
            lines.append(f"import sys\nprint({rng.choice(WORDS)!r}, file=sys.stderr)")
        else:
            lines.append(f"if worker_id == {rng.randint(0, 2)}:\n    print('branch')")
    ending = rng.choice(["value", "large", "raise", "none", "syntax", "unpicklable", "print_end"])
    if ending == "value":
        lines.append(
            rng.choice(
                [
                    "worker_id * 7",
                    "(worker_id, n_workers)",
                    "{'w': worker_id, 's': 'ü'}",
                    "'日本' * worker_id",
                    "[acc for acc in range(worker_id)]",
                ]
            )
        )
    elif ending == "large":
        lines.append(rng.choice(["b'x' * 3_000_000", "list(range(50_000))", "'é' * 1_000_000"]))
    elif ending == "raise":
        lines.append(
            rng.choice(
                ["1 / (worker_id - 1)", "raise ValueError('bad ü')", "[][worker_id]", "{}['missing']", "undefined_name"]
            )
        )
    elif ending == "syntax":
        lines.append(rng.choice(["x = = 1", "def f(:", "print('unclosed"]))
    elif ending == "unpicklable":
        lines.append("(i for i in range(3))")
    elif ending == "print_end":
        lines.append("print('end', end='')")
    return "\n".join(lines)


def serial_outcome(source: str, worker_id: int, n_workers: int):
    """What the cell does in a fresh namespace in this interpreter:
    (stdout, stderr, ("ok", value) or ("error", type name, message))."""
    import ast

    out, err = io.StringIO(), io.StringIO()
    ns = {"worker_id": worker_id, "n_workers": n_workers, "__name__": "__main__"}
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return "", "", ("error", "SyntaxError", None)
    last = ast.Expression(tree.body.pop().value) if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    try:
        with redirect_stdout(out), redirect_stderr(err):
            exec(compile(tree, "<cell>", "exec"), ns)
            value = eval(compile(last, "<cell>", "eval"), ns) if last else None
    except Exception as exc:
        return out.getvalue(), err.getvalue(), ("error", type(exc).__name__, str(exc))
    if hasattr(value, "__next__"):  # a generator: cannot travel back
        return out.getvalue(), err.getvalue(), ("error", "PicklingError", None)
    return out.getvalue(), err.getvalue(), ("ok", value)


def test_two_hundred_random_cells_match_serial_runs(pool):
    rng = random.Random(20261125)
    checked = errors = 0
    for _ in range(200):
        source = random_cell(rng)
        pool.reset()  # each cell meets a fresh namespace, as the serial run does
        for r in pool.run(source):
            stdout, stderr, expected = serial_outcome(source, r.worker_id, pool.size)
            assert (r.stdout, r.stderr) == (stdout, stderr), source
            if expected[0] == "ok":
                assert r.error is None, (source, r.error and r.error.traceback)
                assert r.value == expected[1], source
            else:
                _, type_name, message = expected
                assert r.error is not None and r.error.type_name == type_name, (source, r.error)
                assert message is None or r.error.message == message, source
                errors += 1
            checked += 1
    print(f"\nrandom cells: {checked} worker results checked against serial runs, {errors} of them errors")
