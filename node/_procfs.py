"""Readings of Linux's ``/proc`` shared by the daemon's parts (None or empty where there is
no ``/proc``, as on other systems)."""

from __future__ import annotations


def machine_ticks() -> tuple[int, int] | None:
    """``(busy, total)`` CPU ticks of the whole machine since boot, from ``/proc/stat``:
    busy is user, nice, system, irq, softirq and steal; total adds idle and iowait."""
    try:
        with open("/proc/stat", "rb") as f:
            first = f.readline().split()
    except OSError:
        return None
    if not first or first[0] != b"cpu":
        return None
    try:
        v = [int(x) for x in first[1:9]]
    except ValueError:
        return None
    v += [0] * (8 - len(v))
    user, nice, system, idle, iowait, irq, softirq, steal = v
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait
