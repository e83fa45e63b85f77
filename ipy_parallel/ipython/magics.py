"""The IPython magics %%parallel, %parallel_config, %native_bench, %parallel_status and %parallel_reset: parse, hand off, show."""

from __future__ import annotations

import os

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .. import bench
from ..backends.base import MAX_WORKERS
from .cell import CellOptions, CellUsageError, parse_names, parse_workers
from .display import make_monitor
from .session import BACKENDS, Config, Pools, run_on_backend

__all__ = ["ParallelMagics", "load", "unload"]


@magics_class
class ParallelMagics(Magics):
    """Holds the shell's %%parallel defaults and the warm pools its cells share."""

    def __init__(self, shell):
        super().__init__(shell)
        self.defaults = Config()
        self.pools = Pools()

    @magic_arguments()
    @argument("n", nargs="?", help="number of workers, an integer from 1 to 256 (default: %%parallel_config's, "
              "else os.cpu_count(); on ipyparallel, every engine)")
    @argument("-b", "--backend", choices=BACKENDS, default=None,
              help="where to run: subinterpreter (default: threads of this process, a GIL each), process "
              "(worker processes: numpy and other modules that cannot load in a sub-interpreter), "
              "ipyparallel (the engines of a running ipyparallel cluster)")
    @argument("--profile", help="ipyparallel: the cluster's IPython profile (default: %%parallel_config's, else 'default')")
    @argument("--cluster-id", help="ipyparallel: the cluster's id, when several run under one profile")
    @argument("-i", "--push", metavar="NAMES", help="variables (a,b,...) to copy into every worker first")
    @argument("--scatter", metavar="NAME",
              help="split the sequence NAME into N contiguous chunks; worker k sees chunk k as NAME")
    @argument("-o", "--out", metavar="NAME", help="store the list of per-worker values in NAME")
    @argument("--pull", metavar="NAMES", help="afterwards, set each NAME to the list of its values in the workers")
    @argument("--timeout", type=float, metavar="SECONDS",
              help="stop the workers still running after SECONDS and fail with TimeoutError")
    @argument("--no-monitor", action="store_true", help="no live CPU display and no summary line")
    @cell_magic
    def parallel(self, line, cell):
        """Run the cell in N sub-interpreters at once, each with its own GIL (true parallelism), or
        on another backend (--backend process, --backend ipyparallel) with the same syntax.

        Each worker sees ``worker_id`` (0..N-1) and ``n_workers`` and keeps its variables between
        cells; the pool stays warm while N stays the same. Output is shown per worker as it comes
        ("[3] ..."); the cell's value is the list of the workers' last-expression values. A cell
        in which workers raise fails, showing each distinct traceback once. Interrupting the
        kernel (or --timeout) stops every worker; the pool stays usable.

        Examples::

            %%parallel 4
            print(f"hello from {worker_id} of {n_workers}")

            %%parallel 2 --push n
            sum(i * i for i in range(worker_id, n, n_workers))

            %%parallel --scatter items -o partial_sums
            sum(items)

            %%parallel 4 --pull total
            total = worker_id * 10

            %%parallel 2 --backend process
            import numpy as np
            np.linalg.norm(np.arange(worker_id, 100, n_workers))

        Defaults (backend, N, the display, automatic fallback to processes): %parallel_config.
        """
        args = parse_argstring(self.parallel, line)
        config = self.defaults
        backend = args.backend or config.backend
        try:
            if backend != "ipyparallel" and (args.profile or args.cluster_id):
                raise CellUsageError("--profile and --cluster-id choose an ipyparallel cluster: add --backend ipyparallel")
            options = CellOptions(
                n=parse_workers(args.n, config.n),  # None: the backend's default
                push=parse_names(args.push, "--push"),
                scatter=args.scatter,
                out=args.out,
                pull=parse_names(args.pull, "--pull"),
                timeout=args.timeout,
            )
            if args.timeout is not None and not args.timeout > 0:
                raise CellUsageError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
            show = config.monitor and not args.no_monitor

            def monitor(n: int, label: str):
                return make_monitor(n, enabled=show, shell=self.shell, label=label)

            return run_on_backend(self.pools, config, backend, cell, options, self.shell.user_ns, monitor,
                                  self._filename(cell), profile=args.profile or config.profile,
                                  cluster_id=args.cluster_id or config.cluster_id)
        except CellUsageError as exc:
            raise UsageError(f"%%parallel: {exc}") from None

    @magic_arguments()
    @argument("-b", "--backend", choices=BACKENDS, help="the backend cells run on without --backend")
    @argument("-n", "--workers", metavar="N", help="the number of workers cells get without N ('auto': os.cpu_count(), "
              "or every engine on ipyparallel)")
    @argument("--monitor", choices=("on", "off"), help="the live CPU display and summary line")
    @argument("--fallback", choices=("on", "off"),
              help="on: a cell that fails in sub-interpreters only because a module cannot be imported there "
              "(numpy, ...) runs again on the process backend, with a note saying so")
    @argument("--profile", help="ipyparallel: the cluster's profile ('default' to clear)")
    @argument("--cluster-id", help="ipyparallel: the cluster's id ('' to clear)")
    @argument("--reset", action="store_true", help="back to the defaults first")
    @line_magic
    def parallel_config(self, line=""):
        """Set the defaults of %%parallel cells in this session, and show them.

        Examples::

            %parallel_config                          # show
            %parallel_config --backend process -n 4
            %parallel_config --fallback on --monitor off
            %parallel_config --backend ipyparallel --profile mpi
        """
        args = parse_argstring(self.parallel_config, line)
        config = Config() if args.reset else self.defaults
        try:
            if args.workers is not None:
                config.n = None if args.workers == "auto" else parse_workers(args.workers, 1)
        except CellUsageError as exc:
            raise UsageError(f"%parallel_config -n: {exc}") from None
        if args.backend is not None:
            config.backend = args.backend
        if args.monitor is not None:
            config.monitor = args.monitor == "on"
        if args.fallback is not None:
            config.fallback = args.fallback == "on"
        if args.profile is not None:
            config.profile = None if args.profile in ("", "default") else args.profile
        if args.cluster_id is not None:
            config.cluster_id = args.cluster_id or None
        self.defaults = config
        print(f"ipy_parallel defaults: {config.describe()}")

    @magic_arguments()
    @argument("-n", "--tasks", type=int, default=None, help="tasks run at once (default: os.cpu_count())")
    @argument("--size", type=int, default=None, help="loop length of each task (default: 5,000,000)")
    @argument("--repeat", type=int, default=None, help="rounds, each method once per round; the median and spread "
              f"are shown (default: {bench.ROUNDS}; 1 with --seed-workload)")
    @argument("--plot", action="store_true", help="draw a bar chart (matplotlib)")
    @argument("--seed-workload", action="store_true",
              help="the original experiment: 10 tasks of n=90,000,000, once (minutes on 2 cores)")
    @argument("-o", "--out", metavar="NAME", help="store the results (a BenchReport) in NAME")
    @argument("--no-monitor", action="store_true", help="no live CPU display")
    @line_magic
    def native_bench(self, line=""):
        """Run one CPU-bound workload (k = k*i % 1000000007) every way, side by side: serial,
        threads, multiprocessing fork and spawn, sub-interpreters (our pool), and a C++ kernel
        with the GIL released (and free threads on a free-threaded CPython). Checks that all
        compute the same values and prints time, speedup, CPU use and parallel efficiency
        (speedup / min(tasks, cores)) for each: the median of several rounds, methods interleaved,
        and their spread; a figure above the core ceiling or from a noisy or busy machine is
        flagged. Blocks for the whole run (~10 s by default); Ctrl-C stops it. The %%parallel
        workers are not touched (the multiprocessing rows run in a helper process).

        Examples::

            %native_bench
            %native_bench -n 4 --size 2000000 --repeat 5 --plot -o results
            %native_bench --seed-workload
        """
        args = parse_argstring(self.native_bench, line)
        tasks, size = bench.SEED_WORKLOAD if args.seed_workload else (os.cpu_count() or 1, bench.DEFAULT_SIZE)
        tasks = args.tasks if args.tasks is not None else tasks
        size = args.size if args.size is not None else size
        repeat = args.repeat if args.repeat is not None else (1 if args.seed_workload else bench.ROUNDS)
        for option, value, low, high in (("-n/--tasks", tasks, 1, MAX_WORKERS), ("--repeat", repeat, 1, 100),
                                         ("--size", size, 0, bench.SEED_KERNEL_MAX_N)):
            if not low <= value <= high:
                raise UsageError(f"%native_bench: {option} must be from {low:,} to {high:,}, got {value:,}")
        if args.out is not None and not args.out.isidentifier():
            raise UsageError(f"%native_bench: -o {args.out!r} is not a variable name")
        if args.plot:
            try:
                import matplotlib.pyplot  # noqa: F401
            except ImportError:
                raise UsageError("%native_bench --plot needs matplotlib: pip install matplotlib") from None
        monitor = make_monitor(1, enabled=not args.no_monitor, shell=self.shell, label="native_bench",
                               per_worker=False)
        report = bench.run_native_bench(tasks, size, repeat, monitor)
        print(report.table())
        if args.plot:
            report.plot()
        if args.out:
            self.shell.user_ns[args.out] = report

    @line_magic
    def parallel_status(self, line=""):
        """Show the warm pools, one per backend used: workers, state, runs, CPU time per worker."""
        pools = self.pools.open()
        if not pools:
            print("ipy_parallel: no pool yet; the first %%parallel cell starts one")
            return
        for backend, pool in pools.items():
            cpu = pool.cpu_times()
            print(f"ipy_parallel {backend} pool: {pool.size} workers, {pool.state}, {pool.runs} runs, "
                  f"{sum(cpu):.2f} s CPU in all")
            print("CPU per worker (s): " + " ".join(f"[{i}] {c:.2f}" for i, c in enumerate(cpu)))

    @line_magic
    def parallel_reset(self, line=""):
        """Clear the variables of every worker of every pool (worker_id and n_workers stay)."""
        pools = self.pools.open()
        if not pools:
            print("ipy_parallel: no pool yet; nothing to reset")
            return
        for backend, pool in pools.items():
            try:
                pool.reset()
            except RuntimeError as exc:
                raise UsageError(f"%parallel_reset: the {backend} pool: {exc}") from None
            print(f"ipy_parallel: cleared the variables of the {pool.size} workers of the {backend} pool")

    def _filename(self, body: str) -> str | None:
        """"<parallel In[7]>" for tracebacks, with this cell's number. Read from the input history
        (which holds the cell before it runs), since IPython versions differ on when they
        advance execution_count. None (a name from the source) when the cell is not in history."""
        history = getattr(getattr(self.shell, "history_manager", None), "input_hist_raw", None)
        if history and body.strip() and history[-1].rstrip().endswith(body.rstrip()):
            return f"<parallel In[{len(history) - 1}]>"
        return None

    def close(self) -> None:
        self.pools.close()


_loaded: dict[int, ParallelMagics] = {}  # per shell, so unload can undo exactly what load did


def load(shell) -> None:
    if id(shell) in _loaded:
        return
    magics = ParallelMagics(shell)
    shell.register_magics(magics)
    _loaded[id(shell)] = magics
    # The first %%parallel cell finds its workers ready: they start now, in the background.
    if magics.defaults.backend == "subinterpreter":
        magics.pools.warm(magics.defaults.backend, magics.defaults.n)


def unload(shell) -> None:
    magics = _loaded.pop(id(shell), None)
    if magics is None:
        return
    magics.close()
    manager = shell.magics_manager
    for kind, names in magics.magics.items():
        for name in names:
            manager.magics[kind].pop(name, None)
    manager.registry.pop(type(magics).__name__, None)
