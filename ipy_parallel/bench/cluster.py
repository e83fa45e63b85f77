"""ipyparallel as a contestant: a local cluster that runs the seed workload and the empty round trip."""

from __future__ import annotations

from collections.abc import Callable

from .latency import noop, round_trips
from .runners import seed_task


class IPyParallelCluster:
    """A local ipyparallel cluster (a controller and `engines` engine processes, on loopback):
    the established way to run notebook code in parallel, for comparison."""

    def __init__(self, engines: int = 2):
        import ipyparallel

        self.cluster = ipyparallel.Cluster(n=engines, log_level=40)
        self.client = self.cluster.start_and_connect_sync()
        self.all = self.client[:]
        self.balanced = self.client.load_balanced_view()

    def seed(self, ns: list[int]) -> list[int]:
        return self.balanced.map_sync(seed_task, ns)

    def round_trip(self) -> Callable[[int], list[float]]:
        """A contestant: an empty task on every engine and back."""
        once = lambda: self.all.apply_sync(noop)  # noqa: E731
        once()
        return lambda k: round_trips(once, k)

    def close(self) -> None:
        self.client.close()
        self.cluster.stop_cluster_sync()
