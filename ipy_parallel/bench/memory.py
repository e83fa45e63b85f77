"""A process's memory, from /proc: its resident and its proportional set size."""

from __future__ import annotations


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def pss_bytes(pid: int | str = "self") -> int:
    """Proportional set size: a process's own pages plus its share of pages shared with others
    (what a forked worker really adds; its RSS counts the parent's shared pages in full)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss_bytes(pid)
