"""A process's /proc/<pid>/stat fields and CPU time, read on Linux without stopping it."""

from __future__ import annotations

import os

__all__ = ["stat_fields", "cpu_seconds"]

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
