"""The ipyparallel backend: ClusterPool, whose workers are the engines of a running ipyparallel cluster (beyond one machine).

``ClusterPool`` connects to a cluster someone already started (``ipcluster start``, a
Slurm/MPI/SSH launcher, ``ipyparallel.Cluster``) and makes its first n engines the workers. Every
engine gets the same worker runtime as a sub-interpreter, plus remote.py (shipped as source:
engines may run another CPython build, and may not have ipy_parallel installed); engine.py drives
them. Inputs travel as they do to sub-interpreters, but without sys.path: the engines may be
other machines, whose paths are not ours (set theirs with ``%px sys.path.append(...)``).
"""

from __future__ import annotations

import json
import os
import time

from ...exceptions import ClusterError
from ..base import BasePool
from ..inputs import check_workers
from .engine import ClusterEngine

__all__ = ["ClusterPool"]

_ENGINES_SETTLE = 1.0  # seconds without a new engine after which we stop waiting for more


class ClusterPool(BasePool):
    """The first n engines of a running ipyparallel cluster as a pool of workers.

    ``ClusterPool(n=None, *, profile=None, cluster_id=None, timeout=10)`` connects with
    ``ipyparallel.Client(profile=..., cluster_id=...)`` to a cluster that is already running
    (the default profile when none is given); n None means every engine. It blocks while it
    connects, waits for engines to register (up to ``timeout`` seconds: for n, or for as many as
    the cluster's launcher started) and installs the worker runtime on each (one round trip).
    Worker k is the k-th engine by id; it sees ``worker_id`` = k and ``n_workers`` = n, and
    keeps its variables between runs.

    Same interface as Pool (see BasePool). ``close()`` closes this connection only: the cluster
    and its engines keep running, with the workers' variables.
    """

    _kind = "ClusterPool"
    _on_this_machine = False  # engines may run anywhere: a run's efficiency counts a core per engine
    _follows_path = False

    def __init__(
        self, n: int | None = None, *, profile: str | None = None, cluster_id: str | None = None, timeout: float = 10.0
    ):
        self.profile, self.cluster_id, self._timeout = profile, cluster_id, timeout
        super().__init__(n)

    def _check_size(self, n):
        return None if n is None else check_workers(n, "ClusterPool(n): n")

    def _open_engine(self, n: int | None) -> ClusterEngine:
        profile, cluster_id, timeout = self.profile, self.cluster_id, self._timeout
        client, security_dir = _connect(profile, cluster_id, timeout)
        try:
            ids = _wait_for_engines(client, n, timeout, profile, cluster_id, security_dir)
            if n is not None and n > len(ids):
                raise ValueError(
                    f"ClusterPool({n}): the cluster{_where(profile, cluster_id)} has {len(ids)} engine"
                    f"{'s' if len(ids) != 1 else ''}; ask for at most {len(ids)} workers, or add engines "
                    f"(ipcluster engines -n {n - len(ids)}{_flags(profile, cluster_id)})"
                )
            return ClusterEngine(client, ids[: len(ids) if n is None else n], timeout)
        except BaseException:
            client.close()
            raise

    @property
    def engine_ids(self) -> list[int]:
        """The ipyparallel ids of the engines used, worker by worker."""
        return self._engine.engine_ids

    @property
    def engine_versions(self) -> list[tuple[int, int, int]]:
        """Each engine's Python version."""
        return self._engine.versions

    def __repr__(self) -> str:
        return (
            f"<ipy_parallel.ClusterPool {self.size} engines{_where(self.profile, self.cluster_id)}, "
            f"{self.state}, {self.runs} runs>"
        )


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
        raise ClusterError(
            f"the cluster{_where(profile, cluster_id)} has a controller but no engines; "
            f"add some with: ipcluster engines -n 4{_flags(profile, cluster_id)}"
        )
    return ids
