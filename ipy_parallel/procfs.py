"""A process's /proc/<pid>/stat fields and CPU time, and a process tree's, read on Linux without stopping them."""

from __future__ import annotations

import os
import time

__all__ = ["stat_fields", "cpu_seconds", "live_descendants", "process_tree_cpu"]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def stat_fields(pid: int) -> list[str] | None:
    """The fields after "pid (comm)", state first; None when the process is gone or there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # comm may hold spaces and parentheses


def cpu_seconds(pid: int, reaped_children: bool = False) -> float | None:
    """User + system CPU seconds of every thread of the process (clock-tick resolution), or None;
    with ``reaped_children``, plus those of the children it has waited for."""
    fields = stat_fields(pid)
    if not fields:
        return None
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS


def process_tree_cpu() -> float:
    """CPU seconds used by this process (all its threads) and its children, reaped or still
    running (read from /proc on Linux; elsewhere only reaped children count)."""
    t = os.times()  # children's times: only clock-tick resolution, but only whole processes
    total = time.process_time() + t.children_user + t.children_system
    return total + sum(_proc_cpu(pid) for pid in live_descendants(os.getpid()))


def _proc_cpu(pid: int) -> float:
    # Its own children that it has reaped count too (the benchmark's helper's pools); gone since
    # it was listed: its time is in children_* once reaped.
    return cpu_seconds(pid, reaped_children=True) or 0.0


def live_descendants(root: int) -> list[int]:
    """The pids of the processes below ``root`` that have not ended ([] without /proc)."""
    if not os.path.isdir("/proc"):
        return []
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields and fields[0] != "Z":  # a zombie's time is in children_* once reaped
                parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
