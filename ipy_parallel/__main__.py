"""`python -m ipy_parallel [--notebook PATH]`: a tour of the engine, then of %%parallel in terminal IPython.

Figures are measured as it runs. With --notebook, the notebook's code cells then run one by one
in a terminal IPython shell, as if typed at its prompt: in a terminal the live CPU display
redraws in place; piped, only its summary lines appear.
"""

import argparse
import os
import sys
import time

from . import Pool, bench, parallel


def engine_tour() -> int:
    cores = os.cpu_count() or 1
    n = 3_000_000
    print(f"ipy_parallel on CPython {sys.version.split()[0]}, {cores} cores\n")

    start = time.perf_counter()
    pool = Pool(cores)
    print(
        f"1. Pool({cores}): {cores} isolated sub-interpreters, each with its own GIL, "
        f"ready in {(time.perf_counter() - start) * 1e3:.1f} ms"
    )

    results = pool.run("import sys\nprint(f'hello from worker {worker_id} of {n_workers}')\nsys.version_info[:2]")
    for r in results:
        print(f"   [{r.worker_id}] {r.stdout.strip()}  -> value {r.value}")

    print(f"\n2. The seed workload (k = k*i % 1000000007 over {n:,} values), one task per core, best of 3 each:")
    pool.run(bench.SEED_SOURCE)
    serial = wall = float("inf")
    for _ in range(3):  # alternate, so that a noisy neighbour hits both alike
        start = time.perf_counter()
        expected = bench.serial([n] * cores)
        serial = min(serial, time.perf_counter() - start)
        start = time.perf_counter()
        results = pool.run("seed_task(n)", {"n": n})
        elapsed = time.perf_counter() - start
        if elapsed < wall:
            wall, cpu = elapsed, sum(r.cpu_time for r in results)
    agree = "same answers" if [r.value for r in results] == expected else "DIFFERENT ANSWERS"
    print(f"   serial, one after another: {serial:.3f} s")
    print(
        f"   Pool.run, all at once:     {wall:.3f} s  -> {serial / wall:.2f}x "
        f"(ceiling {cores}.00x), {cpu / wall * 100:.0f}% CPU of {cores * 100}%, {agree}"
    )

    print("\n3. Namespaces persist, and an error in one worker leaves the others alone:")
    pool.run("def risky(x):\n    return 10 / x")
    for r in pool.run("risky(worker_id)"):
        shown = r.value if r.ok else r.error.traceback.strip().splitlines()[-1]
        print(f"   [{r.worker_id}] {shown}")

    start = time.perf_counter()
    rounds = 200
    for _ in range(rounds):
        pool.run("")
    print(
        f"\n4. An empty run on all {cores} warm workers and back: "
        f"{(time.perf_counter() - start) / rounds * 1e6:.0f} us on average over {rounds}"
    )

    print("\n5. The seed project's API, parallel([module, function, args], ...):")
    print(
        f"   parallel(['math', 'factorial', (20,)], ['operator', 'pow', (2, 100)]) = "
        f"{parallel(['math', 'factorial', (20,)], ['operator', 'pow', (2, 100)])}"
    )
    pool.close()
    print(f"\n{pool!r}")
    return 0 if agree == "same answers" else 1


def notebook_tour(path: str) -> int:
    """Run a notebook's code cells in terminal IPython; only cells tagged raises-exception may fail."""
    import nbformat
    from IPython.terminal.interactiveshell import TerminalInteractiveShell

    shell = TerminalInteractiveShell.instance()
    nb = nbformat.read(path, as_version=4)
    print(f"\n%%parallel in terminal IPython: the code cells of {path}\n")
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        count = shell.execution_count
        prompt = f"In [{count}]: "
        print(prompt + cell.source.replace("\n", "\n" + " " * (len(prompt) - 5) + "...: "), flush=True)
        result = shell.run_cell(cell.source, store_history=True)
        expected_failure = "raises-exception" in cell.metadata.get("tags", [])
        if not result.success and not expected_failure:
            print(f"demo: cell In [{count}] failed unexpectedly", file=sys.stderr)
            return 1
        if result.success and expected_failure:
            print(f"demo: cell In [{count}] was meant to fail and did not", file=sys.stderr)
            return 1
        print(flush=True)
    shell.run_line_magic("unload_ext", "ipy_parallel")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ipy_parallel", description=__doc__.splitlines()[0])
    parser.add_argument("--notebook", help="then run this notebook's code cells in terminal IPython")
    args = parser.parse_args(argv)
    status = engine_tour()
    if status == 0 and args.notebook:
        status = notebook_tour(args.notebook)
    return status


if __name__ == "__main__":
    sys.exit(main())
