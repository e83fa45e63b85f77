"""The ipyparallel backend's Engine: one apply per engine and run, through the client of a running cluster.

Every engine first gets the shipped modules (ipy_parallel._wire) and remote.py, in one apply of
_wire.install; each run is then one apply of _wire.call per engine, which calls remote.task
there. Those two functions are sent by value, rebound to a __main__ namespace: ipyparallel sends
a function's code, but imports its module on the engine unless that module is __main__.
"""

from __future__ import annotations

import builtins
import os
import re
import time
import types

from ... import _wire
from ..._wire import protocol
from ...exceptions import ClusterError
from ..signals import deferred_interrupts
from ..engine import EngineBase
from . import remote

__all__ = ["ClusterEngine"]

_OUTPUT_GRACE = 2.0  # seconds to wait for an engine's last output after its reply arrived
_MODULE = "_ipy_parallel_engine"  # remote.py's name on the engines


def _as_main(fn: types.FunctionType) -> types.FunctionType:
    return types.FunctionType(
        fn.__code__, {"__name__": "__main__", "__builtins__": builtins}, fn.__name__, fn.__defaults__, fn.__closure__
    )


_INSTALL, _CALL = _as_main(_wire.install), _as_main(_wire.call)


def _remote_source() -> tuple[str, str, str]:
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "remote.py"), encoding="utf-8") as f:
        return _MODULE, "<ipy_parallel engine>", f.read()


class ClusterEngine(EngineBase):
    """The Engine (see backends/engine.py) over some engines of a connected ipyparallel Client.
    Waits are on ipyparallel's events, which a Ctrl-C interrupts."""

    _kind = "ClusterPool"

    def __init__(self, client, engine_ids: list[int], timeout: float):
        super().__init__(len(engine_ids))
        self._client = client
        self.engine_ids = list(engine_ids)
        self._views = [client[e] for e in self.engine_ids]
        for view in self._views:
            view.block = False
        modules = _wire.shipped_sources((_remote_source(),))
        pending = [v.apply_async(_INSTALL, modules, "install", k, self.size) for k, v in enumerate(self._views)]
        self.versions = [
            _get(ar, timeout, f"install the worker runtime on engine {e}") for e, ar in zip(self.engine_ids, pending)
        ]
        self._ars: list = []
        self._records: list | None = None
        self._offsets: list[list[int]] = []  # per engine: characters of stdout/stderr already drained
        self._all_ready_at: float | None = None
        self._cpu_total = [0.0] * self.size  # CPU of the runs before the current one
        self._last_progress: list = [None] * self.size  # the released run's last positions

    @property
    def busy(self) -> bool:
        return any(not ar.ready() for ar in self._ars)

    def start(
        self,
        source: str,
        filename: str,
        payloads: list[bytes],
        stream: bool = False,
        wait: float = 0.0,
        lent: list[list] = (),
    ) -> bool:
        """One apply per engine (output streams through ipyparallel whatever ``stream`` says);
        they go out in full or not at all."""
        self._check_startable()
        per_worker = [
            payloads[k] if len(payloads) > 1 else (payloads[0] if payloads else None) for k in range(self.size)
        ]
        with deferred_interrupts():
            self._count_run_cpu()
            self._records, self._all_ready_at = None, None
            self._last_progress = [None] * self.size
            self._offsets = [[0, 0] for _ in range(self.size)]
            self._ars = [
                view.apply_async(_CALL, _MODULE, "task", source, filename, p)
                for view, p in zip(self._views, per_worker)
            ]
            self._started()
        return self.wait(wait) if wait > 0 else False

    def wait(self, timeout: float) -> bool:
        """True once every engine has replied and its output has arrived (at most 2 s after its reply)."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while not self._finished():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            pending = next((ar for ar in self._ars if not ar.ready()), None)
            if pending is not None:
                pending.wait(left)
                continue
            # The client's thread delivers output while this one looks: what was missing a moment
            # ago in _finished() may have come since (then the loop ends at its next check).
            silent = next((ar for ar in self._ars if not ar.wait_for_output(0)), None)
            if silent is not None:
                silent.wait_for_output(min(left, 0.05))
        return True

    def collect(self) -> list[tuple]:
        self._check_collectable(self._finished, has_run=bool(self._ars))
        if self._records is None:
            self._records = [self._record(k, ar) for k, ar in enumerate(self._ars)]
        return self._records

    def release(self) -> None:
        """Count the run's CPU, then drop its replies: ours, and the copies the client caches."""
        if self._closed or not self._ars or not self._finished():
            return
        with deferred_interrupts():
            self._count_run_cpu()
            self._last_progress = self.progress()  # the run's last positions outlive its replies
            ars, self._ars, self._records = self._ars, [], None
            try:
                self._client.purge_local_results(ars)
            except RuntimeError:  # still outstanding for the client: its cache keeps them a while
                pass

    def interrupt(self) -> list[int]:
        """The interrupt signal to the engines still running the run, through their nannies
        (waits up to 1 s for the nannies to confirm); returns their worker ids. A signal that
        comes before the cell starts is ignored there, so callers interrupt again until it ends."""
        busy = self.busy_workers()
        if busy and not self._closed:
            # By name: the nanny resolves it on the engine's host.
            sent = self._client.send_signal(remote.SIGNAL, targets=[self.engine_ids[w] for w in busy], block=False)
            try:
                sent.result(timeout=1.0)
            except Exception:
                pass  # an engine without a nanny, or gone: the caller sees it still busy
        return busy

    def busy_workers(self) -> list[int]:
        return [k for k, ar in enumerate(self._ars) if not ar.ready()]

    def cpu_times(self) -> list[float]:
        """CPU seconds each engine's process used in this pool's runs: exact for finished ones,
        the figure last published (every 0.2 s) for the run in progress."""
        run = self._run_cpu() if self._ars else [0.0] * self.size
        return [a + b for a, b in zip(self._cpu_total, run)]

    def progress(self) -> list[tuple[int, int | None] | None]:
        """Each engine's last published position (every 0.2 s), or its reply's for a finished one."""
        positions = []
        for ar in self._ars:
            text = None
            try:
                text = ar.get(0)[3] if ar.ready() else ar.metadata.get("data", {}).get(remote.PROGRESS_KEY)
            except Exception:  # an engine's error: no position
                pass
            positions.append(None if text is None else protocol.read_progress(text))
        return positions or list(self._last_progress)

    def drain_output(self) -> list[tuple[int, int, str]]:
        out = []
        for k, ar in enumerate(self._ars):
            md = ar.metadata
            for s, name in enumerate(("stdout", "stderr")):
                text = md.get(name) or ""
                seen = self._offsets[k][s]
                if len(text) > seen:
                    out.append((k, s + 1, text[seen:]))
                # ipyparallel drops text before a '\r' on a line, so it can shrink: start again from its end
                self._offsets[k][s] = len(text)
        return out

    def close(self, timeout: float) -> list[tuple[int, str]]:
        """Close the connection only: the cluster and its engines keep running (a run in
        progress finishes there). Never abandons anything."""
        if self._mark_closed():
            self._client.close()
        return []

    # -- internals ------------------------------------------------------------------------

    def _finished(self) -> bool:
        if not all(ar.ready() for ar in self._ars):
            return False
        if all(ar.wait_for_output(0) for ar in self._ars):
            return True
        now = time.monotonic()
        if self._all_ready_at is None:
            self._all_ready_at = now
        return now - self._all_ready_at >= _OUTPUT_GRACE  # an engine's idle status never came

    def _count_run_cpu(self) -> None:
        """Add the last run's CPU to the totals, before its replies go."""
        if self._ars:
            self._cpu_total = [a + b for a, b in zip(self._cpu_total, self._run_cpu())]

    def _run_cpu(self) -> list[float]:
        times = []
        for ar in self._ars:
            cpu = None
            if ar.ready():
                try:
                    cpu = float(ar.get(0)[2])
                except Exception:
                    cpu = None
            if cpu is None:
                cpu = float(ar.metadata.get("data", {}).get(remote.CPU_KEY, 0.0))
            times.append(cpu)
        return times

    def _record(self, worker_id: int, ar) -> tuple:
        md = ar.metadata
        stdout, stderr = md.get("stdout") or "", md.get("stderr") or ""
        try:
            reply, wall, cpu = ar.get(0)[:3]
        except Exception as exc:  # not the cell's error (the runtime catches those): the engine's
            reply, wall, cpu = protocol.reply(None, _engine_error(exc)), _seconds(md), 0.0
        return protocol.result_record(worker_id, reply, stdout, stderr, wall, cpu)


def _get(ar, timeout, what):
    try:
        return ar.get(timeout)
    except Exception as exc:
        raise ClusterError(f"could not {what}: {exc}") from None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _engine_error(exc: BaseException) -> tuple:
    """An error record for a task that failed outside the cell, from ipyparallel's error: a
    KeyboardInterrupt outside the cell (shown bare, as if in the cell; from a user's %px
    interrupt), an engine that died, an input the engine could not load (with its traceback)."""
    type_name = getattr(exc, "ename", None) or type(exc).__name__
    message = exc.evalue if hasattr(exc, "evalue") else str(exc)
    if type_name == "KeyboardInterrupt":
        return protocol.interrupted_error(message)
    lines = getattr(exc, "traceback", None)
    text = _ANSI.sub("", "\n".join(lines) if isinstance(lines, list) else (lines or ""))
    if not text.strip():
        text = f"{type_name}: {message}"
    return protocol.error_record(type_name, message, text.rstrip("\n") + "\n")


def _seconds(md) -> float:
    started, completed = md.get("started"), md.get("completed")
    try:
        return (completed - started).total_seconds()
    except Exception:
        return 0.0
