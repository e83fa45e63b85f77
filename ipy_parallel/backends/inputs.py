"""What a run takes in, checked and packed: worker counts, timeouts, targets, and inputs as the protocol's payloads.

Everything here raises before anything runs: a bad argument is a TypeError or ValueError that
says what was wrong, and an input that cannot be pickled is named.
"""

from __future__ import annotations

import functools
import math
import os
import pickle
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cloudpickle

from .._wire import protocol

__all__ = [
    "MAX_WORKERS",
    "check_workers",
    "check_timeout",
    "check_targets",
    "check_input_names",
    "pickle_inputs",
    "pack",
    "cell_filename",
]

#: The most workers one pool may have.
MAX_WORKERS = 256

#: Whether the engine takes a value as it is, lent rather than pickled (``what`` names it for an error).
Lendable = Callable[[Any, str], bool]


def check_workers(n, what: str) -> int:
    """A number of workers, validated (None: os.cpu_count())."""
    n = (os.cpu_count() or 1) if n is None else n
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{what} must be an int number of workers, not {type(n).__name__}")
    if not 1 <= n <= MAX_WORKERS:
        raise ValueError(f"{what} must be between 1 and {MAX_WORKERS}, got {n}")
    return n


def check_timeout(timeout):
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be a number of seconds >= 0 (or None for no limit), got {timeout!r}")
    return None if math.isinf(timeout) else float(timeout)


@functools.lru_cache(maxsize=64)
def cell_filename(source: str) -> str:
    """A name for tracebacks and linecache that differs between sources and not between runs."""
    return f"<cell-{zlib.crc32(source.encode('utf-8', 'surrogatepass')):08x}>"


def check_input_names(mapping, what: str) -> None:
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{what} must be a mapping of names to values, not {type(mapping).__name__}")
    for name in mapping:
        if not isinstance(name, str) or not name.isidentifier():
            raise TypeError(f"{what}: {name!r} is not a valid variable name")
        if name in protocol.RESERVED:
            raise ValueError(f"{what}: {name!r} is set by ipy_parallel in every worker; send it under another name")


def pickle_inputs(mapping, what: str) -> bytes:
    try:
        return cloudpickle.dumps(dict(mapping), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        pass
    for name, value in mapping.items():  # find the culprit, to name it
        try:
            cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(
                f"{what}: {name!r} (a {type(value).__name__}) cannot be sent to the workers, "
                f"because it cannot be pickled: {exc}. Send data it can be rebuilt from instead."
            ) from exc
    raise TypeError(f"{what} cannot be pickled as a whole (each value alone can)")


def check_targets(targets, size: int, kind: str) -> tuple[int, ...] | None:
    """A run's targets, validated: distinct worker ids of a pool of ``size`` workers, or None for all."""
    if targets is None:
        return None
    if isinstance(targets, (str, bytes)) or not isinstance(targets, Sequence):
        raise TypeError(f"targets must be a sequence of worker ids, not {type(targets).__name__}")
    if not targets:
        raise ValueError("targets is empty: give at least one worker id (or None for every worker)")
    for worker_id in targets:
        if isinstance(worker_id, bool) or not isinstance(worker_id, int) or not 0 <= worker_id < size:
            raise ValueError(f"targets: {worker_id!r} is not a worker of this {kind} (its workers are 0-{size - 1})")
    if len(set(targets)) != len(targets):
        raise ValueError(f"targets: {list(targets)} names a worker twice")
    return None if list(targets) == list(range(size)) else tuple(targets)


def pack(
    inputs, worker_inputs, targets: tuple[int, ...] | None, size: int, path: list[str] | None, lendable: Lendable
) -> tuple[list[bytes], list[list]]:
    """What each worker must receive: [] for nothing, [p] for all, or one per worker (each a
    protocol payload, carrying ``path``, the sys.path the workers are to follow, unless None),
    and the objects each payload lends ([] if none does). With ``targets``, every payload names
    them, and the other workers get the path only. ``lendable(value, what)``: whether the
    engine takes a value as it is (see the protocol's ``lent``)."""
    common = _part(inputs, "inputs", lendable) if inputs else None
    each = size if targets is None else len(targets)
    if worker_inputs is None:
        if path is None and common is None and targets is None:
            return [], []
        mine = [None] * each
    else:
        if isinstance(worker_inputs, (str, bytes)) or not isinstance(worker_inputs, Sequence):
            raise TypeError("worker_inputs must be a sequence of mappings, one per worker")
        if len(worker_inputs) != each:
            whom = f"this pool has {each} workers" if targets is None else f"the run has {each} targets"
            raise ValueError(f"worker_inputs has {len(worker_inputs)} entries; {whom}")
        mine = [_part(m, f"worker_inputs[{i}]", lendable) for i, m in enumerate(worker_inputs)]
    groups = [[p for p in (common, part) if p] for part in mine]
    if worker_inputs is None and targets is None:
        groups = groups[:1]  # one payload for all
    payloads = [protocol.pack_payload(path, [(blob, names) for blob, names, _ in parts], targets) for parts in groups]
    lent = [[obj for _, _, objects in parts for obj in objects] for parts in groups]
    if targets is not None:
        idle = protocol.pack_payload(path, [], targets)
        slot = {worker_id: k for k, worker_id in enumerate(targets)}
        payloads = [payloads[slot[w]] if w in slot else idle for w in range(size)]
        lent = [lent[slot[w]] if w in slot else [] for w in range(size)]
    return payloads, (lent if any(lent) else [])


def _part(mapping, what: str, lendable: Lendable) -> tuple[bytes | None, list[str], list] | None:
    """One mapping of inputs as a payload part: (the pickled ones, names of the lent ones,
    the lent objects), or None if it is empty."""
    check_input_names(mapping, what)
    lent = {name: value for name, value in mapping.items() if lendable(value, f"{what}[{name!r}]")}
    rest = {name: value for name, value in mapping.items() if name not in lent}
    if not lent and not rest:
        return None
    return (pickle_inputs(rest, what) if rest else None), list(lent), list(lent.values())
