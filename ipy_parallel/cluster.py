"""The ipyparallel backend: %%parallel cells on the engines of a running ipyparallel cluster, behind Pool's interface.

``ClusterPool`` connects to a cluster someone already started (``ipcluster start``, a Slurm/MPI/SSH
launcher, ``ipyparallel.Cluster``) and makes its first n engines the workers, so that work can go
past one machine. It is a duck type of ``pool.Pool`` (and ``ClusterRun`` of ``pool.Run``), so
``cell.run_cell`` drives it unchanged.

How it works, and why:

- Code: each engine gets the SAME worker runtime as the sub-interpreters (``_runtime.py``), sent as
  source and compiled there once per connection (engines may run another CPython build, so no
  marshalled code), installed as the module ``_ipy_parallel_engine`` in the engine's sys.modules.
  Every run is one ``apply`` per engine of a two-line trampoline that calls it. The runtime works
  in the engine's ``__main__``, which on an engine is its IPython user namespace: variables persist
  between runs and are the same ones ``%px`` and ``view.pull`` see.
- Inputs: pool._build_payloads, as for the sub-interpreters, but without sys.path: the engines
  may be other machines, whose paths are not ours (set theirs with ``%px sys.path.append(...)``).
- Output: the runtime's emit writes to the engine's own sys.stdout/stderr, which ipyparallel
  streams over IOPub while the engine runs; ``ClusterRun.output()`` returns what arrived since
  the last call.
- Interrupt: ``Client.send_signal``, which each engine's nanny (a process beside the engine, on
  its host) turns into a real signal to the engine process, remote engines too (``view.abort``
  only drops queued tasks). Not SIGINT: ipykernel lets SIGINT raise KeyboardInterrupt during
  its whole handling of a request, and one that lands in its own code loses the reply (the run
  never ends) or ends the engine (both seen under racing interrupts). So the signal is SIGURG,
  which the engine's task turns into KeyboardInterrupt only while the cell runs and ignores at
  any other time: the same KeyboardInterrupt in running Python code and end to time.sleep as
  SIGINT, and nothing outside the cell.
- CPU: what the engine process (all its threads) used since the run started there, from
  time.process_time() on the engine: published every 0.2 s over IOPub by a thread beside the
  run, and exact in the result once the engine is done.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from typing import Any, Mapping, Sequence

from .pool import (
    _KEPT_NAMES,
    _RUNTIME_SOURCE,
    Result,
    Run,
    WorkerError,
    _await_turn,
    _build_payloads,
    _cell_filename,
    _result,
)

__all__ = ["ClusterPool", "ClusterRun", "ClusterError"]

_WAIT_SLICE = 0.1  # seconds per wait, so that Ctrl-C is seen that often
_OUTPUT_GRACE = 2.0  # seconds to wait for an engine's last output after its result arrived
_ENGINES_SETTLE = 1.0  # seconds without a new engine after which we stop waiting for more
_CPU_KEY = "ipy_parallel_cpu"
# The signal that interrupts a cell on an engine. Not SIGINT: see task() below. SIGURG because
# its default action is to ignore it (an engine without our handler is not killed by it) and
# nothing on an engine sends it (a terminal sends SIGWINCH to an ipengine started in it).
_SIGNAL = "SIGURG"

# Runs on each engine as the module _ipy_parallel_engine. Kept free of ipy_parallel imports:
# the engine may be a machine where ipy_parallel is not installed.
_ENGINE_SOURCE = '''\
import signal, sys, threading, time, types

_runtime = None
_run = None
_publisher = None
_SIGNAL = "@SIGNAL@"
_streams = [None, None]  # the engine's sys.stdout/stderr during the current task
_CPU_KEY = "@CPU_KEY@"
_PUBLISH_EVERY = 0.2


def install(runtime_source, worker_id, n_workers):
    global _runtime, _run, _publisher
    _runtime = types.ModuleType("_ipy_parallel_runtime")
    name = "<ipy_parallel worker runtime>"
    _runtime.__file__ = name  # the runtime hides its own frames from tracebacks by this name
    exec(compile(runtime_source, name, "exec"), _runtime.__dict__)
    sys.modules["_ipy_parallel_runtime"] = _runtime
    # time.sleep stays as it is: on an engine the run is on the main thread, where a signal ends it.
    _run = _runtime.setup(worker_id, n_workers, _emit, None, backend="ipyparallel")
    if _publisher is None:
        _publisher = _Publisher()
    signal.signal(getattr(signal, _SIGNAL), signal.SIG_IGN)  # until a cell runs
    return sys.version_info[:3]


def _emit(fileno, text):
    stream = _streams[fileno - 1]
    if stream is not None:
        stream.write(text)


def task(source, filename, payload):
    start_cpu, start = time.process_time(), time.perf_counter()
    streams = sys.stdout, sys.stderr  # ipykernel's streams, parented to this request
    signum = getattr(signal, _SIGNAL)
    try:
        try:
            _streams[:] = streams
            _publisher.begin(start_cpu)
            # The interrupt signal raises KeyboardInterrupt while the cell runs, and is ignored
            # at any other time: a SIGINT would also land in ipykernel's own code around the
            # task, where it loses the reply or ends the engine. default_int_handler is C code,
            # so no frame of ours shows in the cell's traceback.
            signal.signal(signum, signal.default_int_handler)
            blob, error, value_format = _run(source, filename, payload)  # raises only an interrupt
        finally:
            signal.signal(signum, signal.SIG_IGN)  # one already pending is dropped too
            sys.stdout, sys.stderr = streams  # in case the interrupt came as the runtime swapped them
    except KeyboardInterrupt:  # it came in the runtime's own code, before or after the cell
        blob, error, value_format = None, _runtime._pack_error(KeyboardInterrupt()), 0
    _publisher.end()
    _streams[:] = [None, None]
    return blob, error, value_format, time.perf_counter() - start, time.process_time() - start_cpu


class _Publisher:
    """A thread that sends this process's CPU time for the current task over IOPub every 0.2 s
    (a data_message, as ipyparallel.datapub.publish_data does, with the task's parent header
    held fixed, so that a late message cannot be taken for the next task's). One thread for
    the engine's life: starting one per task would cost each task a thread start."""

    def __init__(self):
        self._cond = threading.Condition()
        self._job = None
        try:
            from ipykernel.zmqshell import ZMQInteractiveShell
            from ipyparallel.serialize import serialize_object

            self._pub, self._serialize = ZMQInteractiveShell.instance().data_pub, serialize_object
        except Exception:
            self._pub = None  # no live CPU figures; results still carry the exact one
            return
        threading.Thread(target=self._loop, name="ipy_parallel CPU", daemon=True).start()

    def begin(self, start_cpu):
        if self._pub is not None:
            with self._cond:
                self._job = (dict(self._pub.parent_header), start_cpu)
                self._cond.notify()

    def end(self):
        if self._pub is not None:
            with self._cond:
                self._job = None

    def _loop(self):
        pub = self._pub
        while True:
            with self._cond:
                while self._job is None:
                    self._cond.wait()
                job = self._job
                self._cond.wait(_PUBLISH_EVERY)
                if self._job is not job:
                    continue
            parent, start_cpu = job
            data = {_CPU_KEY: time.process_time() - start_cpu}
            try:
                pub.session.send(pub.pub_socket, "data_message", content={"keys": [_CPU_KEY]}, parent=parent,
                                 buffers=self._serialize(data), ident=pub.topic)
            except Exception:
                pass


_KEEP = set(@KEPT_NAMES@)
_APPLY_TEMP = ("_f", "_args", "_kwargs", "_result")


def reset():
    """Clear the user's variables, keeping worker_id, n_workers, IPython's own names and the
    temporaries of the apply request running this (ipyparallel pops them afterwards)."""
    import __main__

    namespace = __main__.__dict__
    hidden = set()
    try:
        from IPython import get_ipython

        hidden = set(get_ipython().user_ns_hidden)
    except Exception:
        pass
    for name in list(namespace):
        if name in _KEEP or name in hidden or (name.startswith("_") and name.endswith(_APPLY_TEMP) and len(name) > 24):
            continue
        del namespace[name]
'''.replace("@CPU_KEY@", _CPU_KEY).replace("@SIGNAL@", _SIGNAL).replace(
    "@KEPT_NAMES@", repr(_KEPT_NAMES))


def _make_engine_functions():
    """The functions sent to the engines. ipyparallel sends a function by its code and, unless
    its module is a dunder one, imports that module on the engine; these say __main__, so
    nothing of ipy_parallel needs to exist there."""
    namespace = {"__name__": "__main__"}
    exec(compile('''\
def _ipp_bootstrap(engine_source, runtime_source, worker_id, n_workers):
    import sys, types
    module = types.ModuleType("_ipy_parallel_engine")
    exec(compile(engine_source, "<ipy_parallel engine>", "exec"), module.__dict__)
    sys.modules["_ipy_parallel_engine"] = module
    return module.install(runtime_source, worker_id, n_workers)


def _ipp_task(source, filename, payload):
    import sys
    return sys.modules["_ipy_parallel_engine"].task(source, filename, payload)


def _ipp_reset():
    import sys
    return sys.modules["_ipy_parallel_engine"].reset()
''', "<ipy_parallel cluster>", "exec"), namespace)
    return namespace["_ipp_bootstrap"], namespace["_ipp_task"], namespace["_ipp_reset"]


_bootstrap, _task, _reset = _make_engine_functions()


class ClusterError(RuntimeError):
    """The cluster cannot be used (ipyparallel missing, no cluster running, engines gone); the
    message says what to do. The magic can show it as a UsageError."""


class ClusterPool:
    """The first n engines of a running ipyparallel cluster as a pool of workers.

    ``ClusterPool(n=None, *, profile=None, cluster_id=None, timeout=10)`` connects with
    ``ipyparallel.Client(profile=..., cluster_id=...)`` to a cluster that is already running
    (the default profile when none is given); n None means every engine. It blocks while it
    connects, waits for engines to register (up to ``timeout`` seconds: for n, or for as many as
    the cluster's launcher started) and installs the worker runtime on each (one round trip).
    Worker k is the k-th engine by id; it sees ``worker_id`` = k and ``n_workers`` = n, and
    keeps its variables between runs.

    Same interface as pool.Pool: ``run()`` blocks until every engine is done (the wait is on
    events, so other threads run); ``submit()`` returns a ClusterRun at once. ``close()`` closes
    this connection only: the cluster and its engines keep running.
    """

    def __init__(self, n: int | None = None, *, profile: str | None = None, cluster_id: str | None = None,
                 timeout: float = 10.0):
        if n is not None and (isinstance(n, bool) or not isinstance(n, int)):
            raise TypeError(f"ClusterPool(n): n must be an int number of workers, not {type(n).__name__}")
        if n is not None and n < 1:
            raise ValueError(f"ClusterPool(n): n must be at least 1, got {n}")
        self.profile, self.cluster_id = profile, cluster_id
        self._lock = threading.Condition()
        self._current: ClusterRun | None = None
        self._closed = False
        self._runs = 0
        self._client, security_dir = _connect(profile, cluster_id, timeout)
        try:
            ids = _wait_for_engines(self._client, n, timeout, profile, cluster_id, security_dir)
            if n is not None and n > len(ids):
                raise ValueError(
                    f"ClusterPool({n}): the cluster{_where(profile, cluster_id)} has {len(ids)} engine"
                    f"{'s' if len(ids) != 1 else ''}; ask for at most {len(ids)} workers, or add engines "
                    f"(ipcluster engines -n {n - len(ids)}{_flags(profile, cluster_id)})")
            self.engine_ids = ids[: len(ids) if n is None else n]
            self._views = [self._client[e] for e in self.engine_ids]
            for view in self._views:
                view.block = False
            size = len(self.engine_ids)
            pending = [v.apply_async(_bootstrap, _ENGINE_SOURCE, _RUNTIME_SOURCE, k, size)
                       for k, v in enumerate(self._views)]
            self.engine_versions = [_get(ar, timeout, f"install the worker runtime on engine {e}")
                                    for e, ar in zip(self.engine_ids, pending)]
        except BaseException:
            self._client.close()
            raise
        self._cpu_total = [0.0] * size

    @property
    def size(self) -> int:
        """Number of workers (engines used)."""
        return len(self.engine_ids)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def state(self) -> str:
        """"idle", "busy" (a run in progress) or "closed"."""
        if self._closed:
            return "closed"
        current = self._current
        return "busy" if current is not None and not current.done else "idle"

    @property
    def runs(self) -> int:
        """Runs started through this connection."""
        return self._runs

    def cpu_times(self) -> list[float]:
        """CPU seconds each engine's process used in this pool's runs (collected ones, plus the
        run in progress as last published). Does not block."""
        current = self._current
        live = current.cpu_times() if current is not None and current._results is None else [0.0] * self.size
        return [a + b for a, b in zip(self._cpu_total, live)]

    def run(self, source: str, inputs: Mapping[str, Any] | None = None, *,
            worker_inputs: Sequence[Mapping[str, Any]] | None = None, filename: str | None = None,
            timeout: float | None = None) -> list[Result]:
        """Execute ``source`` on every engine at once; return one Result per worker, by worker_id.

        As pool.Pool.run: inputs by name (cloudpickle), worker_inputs one mapping per worker, an
        exception reported in its worker's Result. Blocks until every engine is done; at
        ``timeout`` seconds or on KeyboardInterrupt the engines still running are interrupted
        and ParallelTimeout / ParallelInterrupted is raised.
        """
        return self.submit(source, inputs, worker_inputs=worker_inputs, filename=filename).results(timeout)

    def submit(self, source: str, inputs: Mapping[str, Any] | None = None, *,
               worker_inputs: Sequence[Mapping[str, Any]] | None = None, filename: str | None = None,
               stream: bool = False) -> ClusterRun:
        """Send ``source`` to every engine and return its ClusterRun without waiting for it.

        Output is always streamed by ipyparallel; ``stream`` is accepted for Pool's interface.
        Call ``results()`` (or ``abandon()``) before the next submit from this thread; a submit
        from another thread waits until then.
        """
        if not isinstance(source, str):
            raise TypeError(f"source must be str, not {type(source).__name__}")
        if filename is None:
            filename = _cell_filename(source)
        me = threading.get_ident()
        with self._lock:
            _await_turn(self, me)
            # No sys.path: it names directories of this machine, and engines may be elsewhere.
            payloads = _build_payloads(inputs, worker_inputs, self.size, None)
            # An abandoned run needs no waiting: each engine runs its queue in order, so the new
            # run starts on an engine only once the old one has finished there.
            self._current = None
            per_worker = [payloads[k] if len(payloads) > 1 else (payloads[0] if payloads else None)
                          for k in range(self.size)]
            ars = [view.apply_async(_task, source, filename, p) for view, p in zip(self._views, per_worker)]
            self._runs += 1
            self._current = run = ClusterRun(self, ars, me)
        return run

    def interrupt(self) -> list[int]:
        """Raise KeyboardInterrupt in the cell on every engine still running the current run
        (from any thread; waits only for the signals to be sent, not for the engines to stop);
        returns their worker ids."""
        current = self._current
        if current is None or self._closed:
            return []
        busy = current.busy_workers()
        self._signal(busy)
        return busy

    def reset(self) -> None:
        """Clear every engine's variables (worker_id and n_workers stay; imported modules stay
        imported). Blocks until every engine has done it."""
        self._check_open()
        with self._lock:
            while self._current is not None and not self._current._abandoned:
                if self._current._thread == threading.get_ident():
                    raise RuntimeError("the previous run on this pool was not collected: call its results() first")
                self._lock.wait()
        for k, ar in enumerate([view.apply_async(_reset) for view in self._views]):
            _get(ar, None, f"reset worker {k}")

    def close(self) -> None:
        """Close this connection to the cluster (harmless twice). The cluster and its engines
        keep running, with the workers' variables; a run in progress finishes there."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._lock.notify_all()
        self._client.close()

    def __enter__(self) -> ClusterPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<ipy_parallel.ClusterPool {self.size} engines{_where(self.profile, self.cluster_id)}, "
                f"{self.state}, {self.runs} runs>")

    # -- internals ------------------------------------------------------------------------

    def _signal(self, workers: list[int]) -> None:
        """The interrupt signal to these workers' engines, through their nannies. Waits (up to
        1 s) for the nannies to confirm that it was sent."""
        if workers and not self._closed:
            # By name: the nanny resolves it on the engine's host.
            sent = self._client.send_signal(_SIGNAL, targets=[self.engine_ids[w] for w in workers], block=False)
            try:
                sent.result(timeout=1.0)
            except Exception:
                pass  # an engine without a nanny, or gone: the caller sees it still busy

    def _release(self, run: ClusterRun, cpu: list[float] | None) -> None:
        with self._lock:
            if cpu is not None:
                self._cpu_total = [a + b for a, b in zip(self._cpu_total, cpu)]
            if self._current is run and not run._abandoned:
                self._current = None
            self._lock.notify_all()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this ClusterPool is closed: create a new ClusterPool to run more work")


class ClusterRun(Run):
    """One run in progress on a ClusterPool: wait for it, read its output as it comes, take its
    results. Run's results() and stop() drive it, through the methods below."""

    def __init__(self, pool: ClusterPool, ars: list, thread: int):
        self._pool = pool
        self._ars = ars
        self._thread = thread
        self._abandoned = False
        self._results: list[Result] | None = None
        self._offsets = [[0, 0] for _ in ars]  # characters of stdout/stderr already returned
        self._all_ready_at: float | None = None

    @property
    def done(self) -> bool:
        return self._results is not None or self.wait(0)

    def wait(self, timeout: float | None = None) -> bool:
        """Block up to ``timeout`` seconds (None: until done); True once every engine has
        replied and its output has arrived (at most 2 s after its reply). Wakes every 0.1 s
        so that Ctrl-C is seen."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._finished():
                return True
            left = _WAIT_SLICE if deadline is None else min(_WAIT_SLICE, deadline - time.monotonic())
            if left <= 0:
                return False
            pending = next((ar for ar in self._ars if not ar.ready()), None)
            if pending is not None:
                pending.wait(left)
            else:
                next(ar for ar in self._ars if not ar.wait_for_output(0)).wait_for_output(left)

    def output(self) -> list[tuple[int, str, str]]:
        """What the engines wrote since the last call, as (worker_id, "stdout" | "stderr", text),
        in order for each worker and stream. Does not block."""
        out = []
        for k, ar in enumerate(self._ars):
            md = ar.metadata
            for s, name in enumerate(("stdout", "stderr")):
                text = md.get(name) or ""
                seen = self._offsets[k][s]
                if len(text) > seen:
                    out.append((k, name, text[seen:]))
                # ipyparallel drops text before a '\r' on a line, so it can shrink: start again from its end
                self._offsets[k][s] = len(text)
        return out

    def cpu_times(self) -> list[float]:
        """CPU seconds each engine's process has used since this run started on it: exact for
        an engine that is done, else the figure it last published (every 0.2 s). Does not block."""
        times = []
        for ar in self._ars:
            cpu = None
            if ar.ready():
                try:
                    cpu = float(ar.get(0)[4])
                except Exception:
                    cpu = None
            if cpu is None:
                cpu = float(ar.metadata.get("data", {}).get(_CPU_KEY, 0.0))
            times.append(cpu)
        return times

    def busy_workers(self) -> list[int]:
        """The ids of the workers whose engine has not replied yet."""
        return [k for k, ar in enumerate(self._ars) if not ar.ready()]

    def _interrupt(self) -> None:
        # Run.stop() calls this again every 0.1 s: a signal that comes before the cell starts
        # is ignored, and the cell may catch KeyboardInterrupt itself.
        self._pool._signal(self.busy_workers())

    def abandon(self) -> None:
        """Give up on this run's results; the engines finish it, and the pool's next run
        queues behind it on each engine."""
        if self._results is None:
            self._abandoned = True
            self._pool._release(self, None)

    # -- internals ------------------------------------------------------------------------

    def _finished(self) -> bool:
        if self._results is not None:
            return True
        if not all(ar.ready() for ar in self._ars):
            return False
        if all(ar.wait_for_output(0) for ar in self._ars):
            return True
        now = time.monotonic()
        if self._all_ready_at is None:
            self._all_ready_at = now
        return now - self._all_ready_at >= _OUTPUT_GRACE  # an engine's idle status never came

    def _finish(self) -> list[Result]:
        results = [self._result(k, ar) for k, ar in enumerate(self._ars)]
        self._results = results
        self._pool._release(self, [r.cpu_time for r in results])
        return results

    def _result(self, worker_id: int, ar) -> Result:
        md = ar.metadata
        stdout, stderr = md.get("stdout") or "", md.get("stderr") or ""
        try:
            blob, error, value_format, wall, cpu = ar.get(0)
        except Exception as exc:  # not the cell's error (the runtime catches those): the engine's
            wall = _seconds(md)
            return Result(worker_id, None, stdout, stderr, _engine_error(exc), wall, 0.0)
        return _result(worker_id, blob, stdout, stderr, error, wall, cpu, value_format)


# -- connecting ----------------------------------------------------------------------------


def _import_ipyparallel():
    try:
        import ipyparallel
    except ImportError:
        raise ClusterError("ClusterPool needs ipyparallel, which is not installed: pip install ipyparallel") from None
    return ipyparallel


def _flags(profile, cluster_id) -> str:
    return (f" --profile {profile}" if profile else "") + (f" --cluster-id {cluster_id}" if cluster_id else "")


def _where(profile, cluster_id) -> str:
    parts = ([f"profile {profile!r}"] if profile else []) + ([f"cluster id {cluster_id!r}"] if cluster_id else [])
    return f" ({', '.join(parts)})" if parts else ""


def _connect(profile, cluster_id, timeout):
    """(an ipyparallel Client of the running cluster, its profile's security directory), or a
    ClusterError that says how to start one."""
    ipp = _import_ipyparallel()
    from IPython.core.profiledir import ProfileDir, ProfileDirError
    from IPython.paths import get_ipython_dir

    start_hint = f"start one with: ipcluster start -n 4{_flags(profile, cluster_id)}"
    no_cluster = f"no ipyparallel cluster is running{_where(profile, cluster_id)}; {start_hint}"
    # Checked here because Client would wait `timeout` seconds for the file, printing as it waits.
    try:
        profile_dir = ProfileDir.find_profile_dir_by_name(get_ipython_dir(), profile or "default")
    except ProfileDirError:
        raise ClusterError(f"{no_cluster} (there is no IPython profile {profile or 'default'!r})") from None
    client_file = f"ipcontroller-{cluster_id}-client.json" if cluster_id else "ipcontroller-client.json"
    if not os.path.exists(os.path.join(profile_dir.security_dir, client_file)):
        raise ClusterError(no_cluster)
    try:
        return ipp.Client(profile=profile, cluster_id=cluster_id or None, timeout=timeout), profile_dir.security_dir
    except (TimeoutError, OSError) as exc:  # a file left behind by a controller that is gone
        raise ClusterError(f"{no_cluster} (its controller did not answer: {exc})") from None


def _announced_engines(security_dir, cluster_id) -> int | None:
    """How many engines the cluster's launcher started (its cluster-<id>.json, written by
    ipcluster and ipyparallel.Cluster), or None for a cluster started some other way."""
    try:
        with open(os.path.join(security_dir, f"cluster-{cluster_id or ''}.json")) as f:
            sets = json.load(f)["engines"]["sets"]
        return sum(int(s["n"]) for s in sets.values())
    except Exception:
        return None


def _wait_for_engines(client, n, timeout, profile, cluster_id, security_dir) -> list[int]:
    """The engine ids, once those wanted have registered (n, else as many as the launcher
    started; without that figure, until none has come for a second), or at timeout. Engines
    register a few seconds after `ipcluster start --daemonize` returns."""
    deadline = time.monotonic() + timeout
    ids = sorted(client.ids)
    announced = _announced_engines(security_dir, cluster_id)
    if n is not None and announced is not None and n > max(announced, len(ids)):
        return ids  # more than will ever come: say so now
    target = n if n is not None else announced
    changed = time.monotonic()
    while time.monotonic() < deadline:
        if target is not None and len(ids) >= target:
            break
        if target is None and ids and time.monotonic() - changed >= _ENGINES_SETTLE:
            break
        time.sleep(0.05)
        now_ids = sorted(client.ids)
        if now_ids != ids:
            ids, changed = now_ids, time.monotonic()
    if not ids:
        raise ClusterError(f"the cluster{_where(profile, cluster_id)} has a controller but no engines; "
                           f"add some with: ipcluster engines -n 4{_flags(profile, cluster_id)}")
    return ids


def _get(ar, timeout, what):
    try:
        return ar.get(timeout)
    except Exception as exc:
        raise ClusterError(f"could not {what}: {exc}") from None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _engine_error(exc: BaseException) -> WorkerError:
    """A WorkerError for a task that failed outside the cell, from ipyparallel's error: a
    KeyboardInterrupt outside the cell (shown bare, as if in the cell; from a user's %px interrupt),
    an engine that died, an input the engine could not load (with the engine's traceback)."""
    type_name = getattr(exc, "ename", None) or type(exc).__name__
    message = exc.evalue if hasattr(exc, "evalue") else str(exc)
    if type_name == "KeyboardInterrupt":
        return WorkerError(type_name, message, "KeyboardInterrupt\n", KeyboardInterrupt())
    lines = getattr(exc, "traceback", None)
    text = _ANSI.sub("", "\n".join(lines) if isinstance(lines, list) else (lines or ""))
    if not text.strip():
        text = f"{type_name}: {message}"
    return WorkerError(type_name, message, text.rstrip("\n") + "\n", None)


def _seconds(md) -> float:
    started, completed = md.get("started"), md.get("completed")
    try:
        return (completed - started).total_seconds()
    except Exception:
        return 0.0
