"""The IPython magics (%%parallel, %parallel, %autoparallel, %parallel_wait, %parallel_stop, %parallel_config, %parallel_status, %parallel_reset, %native_bench): parse, hand off, show."""

from __future__ import annotations

import ast
import atexit
import importlib.util
import os

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from .. import bench
from ..backends.inputs import MAX_WORKERS
from ..backends.threads import TAKING_TURNS, takes_turns
from . import joblib_hook, shell_commands
from .autoparallel import AutoParallel
from .background import stop_all
from .cell import CellOptions, CellUsageError, is_name, parse_names, parse_targets, parse_workers
from .display import in_notebook, make_monitor
from .session import BACKENDS, Cluster, Config, Pools, Turn, run_on_backend

__all__ = ["ParallelMagics", "load", "unload"]


@magics_class
class ParallelMagics(Magics):
    """Holds the shell's %%parallel defaults and the warm pools its cells share."""

    def __init__(self, shell):
        super().__init__(shell)
        self.defaults = Config()
        self.pools = Pools()
        self.auto = AutoParallel(shell)

    @magic_arguments()
    @argument(
        "n",
        nargs="?",
        help="number of workers, an integer from 1 to 256 (default: %%parallel_config's, "
        "else os.cpu_count(); on ipyparallel, every engine)",
    )
    @argument(
        "-b",
        "--backend",
        choices=BACKENDS,
        default=None,
        help="where to run: subinterpreter (threads of this process, a GIL each: the default with a GIL), "
        "process (worker processes: numpy and other modules that cannot load in a sub-interpreter), "
        "ipyparallel (the engines of a running ipyparallel cluster), threads (threads of this "
        "interpreter sharing its objects: the default on a free-threaded CPython, where they run in "
        "parallel; in turns with a GIL)",
    )
    @argument(
        "--profile", help="ipyparallel: the cluster's IPython profile (default: %%parallel_config's, else 'default')"
    )
    @argument("--cluster-id", help="ipyparallel: the cluster's id, when several run under one profile")
    @argument("-i", "--push", metavar="NAMES", help="variables (a,b,...) to copy into every worker first")
    @argument(
        "--scatter",
        metavar="NAME",
        help="split the sequence NAME into N contiguous chunks; worker k sees chunk k as NAME",
    )
    @argument("-o", "--out", metavar="NAME", help="store the list of per-worker values in NAME")
    @argument("--pull", metavar="NAMES", help="afterwards, set each NAME to the list of its values in the workers")
    @argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="stop the workers still running after SECONDS and fail with TimeoutError",
    )
    @argument(
        "-t",
        "--targets",
        metavar="IDS",
        help="run on these workers of the pool only (1,3 or 0-3): values in their order; each keeps its worker_id",
    )
    @argument(
        "--bg",
        action="store_true",
        help="run in the background: the cell returns a handle at once (.done(), .wait(), .result(), "
        ".stop()) and its display goes on updating; -o and --pull happen when the run ends",
    )
    @argument(
        "--wait",
        action="store_true",
        help="if the pool is busy with a background run, wait for it to end (default: say so and stop)",
    )
    @argument("--no-monitor", action="store_true", help="no live CPU display and no summary line")
    @line_cell_magic
    def parallel(self, line, cell=None):
        """Run the cell in N sub-interpreters at once, each with its own GIL (true parallelism), or
        on another backend (--backend process, --backend ipyparallel) with the same syntax. On a
        free-threaded CPython (3.14t) running without the GIL the default is N threads of this
        interpreter (--backend threads): they share its objects and every module, numpy included.

        As a line magic, ``%parallel STATEMENT`` runs that one line (no options) in every worker
        of the default pool (%parallel_config) and returns the list of values.

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

            %%parallel --targets 0,2
            worker_id                                 # [0, 2]

            %%parallel --bg -o sums                   # returns at once; sums is set at the end
            sum(i * i for i in range(10**7))

            %parallel import math                     # the line magic: one statement, every worker

        Defaults (backend, N, the display, automatic fallback to processes): %parallel_config.
        Background runs: %parallel_wait, %parallel_stop, %parallel_status.
        """
        if cell is None:
            return self._run(line, "", "%parallel")
        return self._run(cell, line, "%%parallel")

    def _run(self, source: str, line: str, what: str):
        """A %%parallel cell (or a %parallel line, which takes no options) on its backend."""
        args = parse_argstring(self.parallel, line)
        config = self.defaults
        backend = args.backend or config.backend
        try:
            if what == "%parallel" and not source.strip():
                raise CellUsageError(
                    "give the statement to run in every worker: %parallel STATEMENT "
                    "(for a whole cell and options, %%parallel)"
                )
            if what == "%parallel" and source.lstrip().startswith("-") and not _parses(source):
                raise CellUsageError(
                    f"{source.split()[0]}: the line magic takes no options, only the statement "
                    "to run; for options, use %%parallel OPTIONS with the code on the lines below"
                )
            if backend != "ipyparallel" and (args.profile or args.cluster_id):
                raise CellUsageError(
                    "--profile and --cluster-id choose an ipyparallel cluster: add --backend ipyparallel"
                )
            options = CellOptions(
                n=parse_workers(args.n, config.n),  # None: the backend's default
                push=parse_names(args.push, "--push"),
                scatter=args.scatter,
                out=args.out,
                pull=parse_names(args.pull, "--pull"),
                timeout=args.timeout,
                targets=parse_targets(args.targets),
            )
            if args.timeout is not None and not args.timeout > 0:
                raise CellUsageError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
            show = config.monitor and not args.no_monitor

            def monitor(n: int, label: str, background: bool = False, ids=None):
                return make_monitor(n, enabled=show, shell=self.shell, label=label, background=background, ids=ids)

            return run_on_backend(
                self.pools,
                config,
                backend,
                source,
                options,
                self.shell.user_ns,
                monitor,
                self._filename(source),
                cluster=Cluster(args.profile or config.profile, args.cluster_id or config.cluster_id),
                turn=Turn(background=args.bg, wait=args.wait, can_wait=what == "%%parallel"),
            )
        except CellUsageError as exc:
            raise UsageError(f"{what}: {exc}") from None

    @magic_arguments()
    @argument(
        "mode",
        nargs="?",
        choices=("on", "off"),
        help="on: every cell runs as %%parallel; off: back to normal (default: show whether it is on)",
    )
    @line_magic
    def autoparallel(self, line=""):
        """While on, every cell runs as a %%parallel cell with the session's defaults
        (%parallel_config), as ipyparallel's %autopx sends every cell to its engines. A cell
        that begins with % or ! (IPython's own syntax: %autoparallel off, %parallel_status)
        runs here as usual. The terminal's prompt says [parallel] while it is on.

        Examples::

            %autoparallel on
            %autoparallel off
        """
        args = parse_argstring(self.autoparallel, line)
        if args.mode is not None:
            self.auto.set(args.mode == "on")
        n = self.defaults.n or "os.cpu_count()"
        if self.auto.on:
            print(
                f"ipy_parallel: autoparallel is on: every cell runs as %%parallel ({self.defaults.backend}, "
                f"{n} workers), except cells that begin with % or !; %autoparallel off ends it"
            )
        else:
            print("ipy_parallel: autoparallel is off: cells run here as usual")

    @magic_arguments()
    @argument("--timeout", type=float, metavar="SECONDS", help="wait at most SECONDS (default: until they end)")
    @line_magic
    def parallel_wait(self, line=""):
        """Block until every background run (%%parallel --bg) has ended, then say how each
        ended; its handle's .result() gives its values or raises its error. Interrupting stops
        the waiting, not the runs (%parallel_stop stops them)."""
        args = parse_argstring(self.parallel_wait, line)
        if args.timeout is not None and not args.timeout >= 0:
            raise UsageError(f"%parallel_wait: --timeout must be a number of seconds >= 0, got {args.timeout:g}")
        if not self.pools.running():
            print("ipy_parallel: no background run is going on")
            return
        for job in self.pools.wait_background(args.timeout):
            print(f"ipy_parallel: {job.describe()}")

    @magic_arguments()
    @argument("numbers", nargs="*", type=int, help="the background runs to stop (default: every one going on)")
    @line_magic
    def parallel_stop(self, line=""):
        """Stop background runs (%%parallel --bg): every one going on, or those numbered. Their
        workers are interrupted; the pool stays warm and usable. Blocks a second or so at most."""
        args = parse_argstring(self.parallel_stop, line)
        known = {job.number: job for job in self.pools.background}
        unknown = [n for n in args.numbers if n not in known]
        if unknown:
            raise UsageError(
                f"%parallel_stop: there is no background run {', '.join(map(str, unknown))} "
                f"(runs so far: {', '.join(map(str, known)) or 'none'})"
            )
        jobs = [known[n] for n in args.numbers] if args.numbers else self.pools.running()
        if not jobs:
            print("ipy_parallel: no background run is going on")
        stop_all(jobs)
        for job in jobs:
            print(f"ipy_parallel: {job.describe()}")

    @magic_arguments()
    @argument(
        "-b",
        "--backend",
        choices=BACKENDS,
        help="the backend cells run on without --backend (at first: $IPY_PARALLEL_BACKEND, else threads "
        "on a free-threaded CPython without the GIL, else subinterpreter)",
    )
    @argument(
        "-n",
        "--workers",
        metavar="N",
        help="the number of workers cells get without N ('auto': os.cpu_count(), or every engine on ipyparallel)",
    )
    @argument("--monitor", choices=("on", "off"), help="the live CPU display and summary line")
    @argument(
        "--fallback",
        choices=("on", "off"),
        help="on: a cell that fails in sub-interpreters only because a module cannot be imported there "
        "(numpy, ...) runs again on the process backend, with a note saying so",
    )
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
    @argument("--size", type=int, default=None, help=f"loop length of each task (default: {bench.DEFAULT_SIZE:,})")
    @argument(
        "--repeat",
        type=int,
        default=None,
        help="rounds, each method once per round; the median and spread "
        f"are shown (default: {bench.ROUNDS}; 1 with --seed-workload)",
    )
    @argument(
        "--plot",
        action="store_true",
        help="a bar chart of the speedups (matplotlib): inline in a notebook; "
        "elsewhere saved as native_bench-<date>-<time>.png in the current directory",
    )
    @argument(
        "--plot-file",
        metavar="PATH",
        help="save the chart at PATH (PNG unless the name says otherwise); implies --plot",
    )
    @argument(
        "--seed-workload",
        action="store_true",
        help="the original experiment: 10 tasks of n=90,000,000, once (minutes on 2 cores)",
    )
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

        The report has a speedup bar per method (longer is better) up to a mark at the ceiling,
        ipy_parallel's row highlighted and the doubtful figures flagged: a table in a notebook,
        text elsewhere. --plot draws the speedups as a chart: inline in a notebook; elsewhere (the
        terminal) it is saved as a PNG, and the path printed.

        Examples::

            %native_bench
            %native_bench -n 4 --size 2000000 --repeat 5 --plot -o results
            %native_bench --plot-file speedups.png
            %native_bench --seed-workload
        """
        args = parse_argstring(self.native_bench, line)
        tasks, size = bench.SEED_WORKLOAD if args.seed_workload else (os.cpu_count() or 1, bench.DEFAULT_SIZE)
        tasks = args.tasks if args.tasks is not None else tasks
        size = args.size if args.size is not None else size
        repeat = args.repeat if args.repeat is not None else (1 if args.seed_workload else bench.ROUNDS)
        for option, value, low, high in (
            ("-n/--tasks", tasks, 1, MAX_WORKERS),
            ("--repeat", repeat, 1, 100),
            ("--size", size, 0, bench.SEED_KERNEL_MAX_N),
        ):
            if not low <= value <= high:
                raise UsageError(f"%native_bench: {option} must be from {low:,} to {high:,}, got {value:,}")
        if args.out is not None and not is_name(args.out):
            raise UsageError(f"%native_bench: -o {args.out!r} is not a variable name")

        # Checked now, not after a benchmark of minutes that would then have nowhere to go.
        if (args.plot or args.plot_file is not None) and importlib.util.find_spec("matplotlib") is None:
            raise UsageError("%native_bench --plot needs matplotlib: pip install matplotlib")
        if args.plot_file is not None and not os.path.isdir(
            os.path.dirname(os.path.abspath(os.path.expanduser(args.plot_file)))
        ):
            raise UsageError(f"%native_bench: --plot-file {args.plot_file!r}: no such directory")
        monitor = make_monitor(1, enabled=not args.no_monitor, shell=self.shell, label="native_bench", per_worker=False)
        report = bench.run_native_bench(tasks, size, repeat, monitor)
        report.show(in_notebook(self.shell), plot=args.plot, plot_file=args.plot_file)
        if args.out:
            self.shell.user_ns[args.out] = report

    @magic_arguments()
    @argument(
        "--timeline",
        action="store_true",
        help="also show where the last run spent its time: a row per worker, busy or idle over "
        "time, when each finished, and the run's efficiency (CPU time / (wall time x min(workers, "
        "cores))); in Python, Run.timeline and pool.last_timeline",
    )
    @line_magic
    def parallel_status(self, line=""):
        """Show the warm pools, one per backend used: workers, state, runs, CPU time per worker."""
        args = parse_argstring(self.parallel_status, line)
        pools = self.pools.open()
        if not pools:
            print("ipy_parallel: no pool yet; the first %%parallel cell starts one")
        for backend, pool in pools.items():
            cpu = pool.cpu_times()
            print(
                f"ipy_parallel {backend} pool: {pool.size} workers, {pool.state}, {pool.runs} runs, "
                f"{sum(cpu):.2f} s CPU in all"
            )
            print("CPU per worker (s): " + " ".join(f"[{i}] {c:.2f}" for i, c in enumerate(cpu)))
            if backend == "threads" and takes_turns():
                print(f"ipy_parallel threads pool: {TAKING_TURNS} (a free-threaded CPython, 3.14t, runs them at once)")
        if args.timeline:
            self._show_last_timeline()
        for job in self.pools.background:
            print(f"ipy_parallel: {job.describe()}")
        if self.auto.on:
            print("ipy_parallel: autoparallel is on (%autoparallel off ends it)")

    def _show_last_timeline(self) -> None:
        """The timeline of the last cell's run (not of a --pull, a reset or a pool's warm-up after it)."""
        backend, timeline = self.pools.last_cell or (None, None)
        if timeline is None:
            why = "no cell has run yet" if backend is None else "the last cell's results never came back"
            print(f"ipy_parallel: {why}, so there is no timeline to show")
            return
        print(f"ipy_parallel: the last cell's run, on the {backend} pool:")
        display(timeline)

    @magic_arguments()
    @argument(
        "--fresh",
        action="store_true",
        help="new workers instead: close the sub-interpreter and process pools (the next cell starts new "
        "interpreters and processes, which import everything again) and end the interpreters kept "
        "in reserve; a cluster's engines are reset as without --fresh",
    )
    @line_magic
    def parallel_reset(self, line=""):
        """Clear the variables of every worker of every pool (worker_id and n_workers stay).

        The modules cells imported stay imported, and so do sub-interpreters that a closed pool's
        workers kept: --fresh starts from new interpreters and processes."""
        args = parse_argstring(self.parallel_reset, line)
        pools = self.pools.open()
        if not pools and not args.fresh:
            print("ipy_parallel: no pool yet; nothing to reset")
            return
        try:  # every pool first: none is cleared if one is busy
            for backend in pools:
                self.pools.check_free(backend, what="%parallel_reset", can_wait=False)
        except CellUsageError as exc:
            raise UsageError(f"%parallel_reset: {exc}") from None
        if args.fresh:
            ended = self.pools.renew()
            print(f"ipy_parallel: {ended}; the next cell starts new workers")
            pools = {backend: pool for backend, pool in pools.items() if backend == "ipyparallel"}
        for backend, pool in pools.items():
            try:
                pool.reset()
            except RuntimeError as exc:
                raise UsageError(f"%parallel_reset: the {backend} pool: {exc}") from None
            print(f"ipy_parallel: cleared the variables of the {pool.size} workers of the {backend} pool")

    def _filename(self, body: str) -> str | None:
        """ "<parallel In[7]>" for tracebacks, with this cell's number. Read from the input history
        (which holds the cell before it runs), since IPython versions differ on when they
        advance execution_count. None (a name from the source) when the cell is not in history."""
        history = getattr(getattr(self.shell, "history_manager", None), "input_hist_raw", None)
        if history and body.strip() and history[-1].rstrip().endswith(body.rstrip()):
            return f"<parallel In[{len(history) - 1}]>"
        return None

    def close(self) -> None:
        self.auto.set(False)
        self.pools.close()

    def at_exit(self) -> None:
        """As the interpreter exits, before the engine's hook ends the pools: a background run is
        stopped, and says so, rather than lose its pool under it. A shell that exits as asked
        (`exit`, a kernel's shutdown or restart request) ends with status 0 even where workers
        the engine gave up on keep CPython from finalizing (the engine cannot read the status)."""
        if self.shell.exit_now:
            from .. import _engine

            _engine.set_stuck_exit_status(0)
        self.pools.stop_background()


_loaded: dict[int, ParallelMagics] = {}  # per shell, so unload can undo exactly what load did


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except SyntaxError:
        return False
    return True


def load(shell) -> None:
    if id(shell) in _loaded:
        return
    magics = ParallelMagics(shell)
    shell.register_magics(magics)
    _loaded[id(shell)] = magics
    shell_commands.install(shell)  # !cmd and %pip would otherwise fork, which ends every pool
    # Before the engine's own exit hook ends the pools (hooks run last registered first).
    atexit.register(magics.at_exit)
    shell.events.register("pre_run_cell", magics.pools.cell_starts)
    shell.events.register("post_run_cell", magics.pools.cell_ended)
    joblib_hook.install()
    # The first %%parallel cell finds its workers ready: they start now, in the background.
    if magics.defaults.backend in ("subinterpreter", "threads"):
        magics.pools.warm(magics.defaults.backend, magics.defaults.n)


def unload(shell) -> None:
    magics = _loaded.pop(id(shell), None)
    if magics is None:
        return
    atexit.unregister(magics.at_exit)
    shell.events.unregister("pre_run_cell", magics.pools.cell_starts)
    shell.events.unregister("post_run_cell", magics.pools.cell_ended)
    joblib_hook.uninstall()
    shell_commands.uninstall(shell)
    magics.close()
    manager = shell.magics_manager
    for kind, names in magics.magics.items():
        for name in names:
            manager.magics[kind].pop(name, None)
    manager.registry.pop(type(magics).__name__, None)
