"""Processes as Linux's /proc shows them: whether a pid lives, the pids there are, and
the fields of ``/proc/<pid>/stat`` and ``/proc/<pid>/status`` that the sandbox (killing
and reaping a job's processes, probing the kernel) and its callers use.

Every reader returns ``None`` or nothing for a process that is gone or unreadable: a
process may exit between listing /proc and reading its files.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProcStat:
    """A process's entry in ``/proc/<pid>/stat`` (proc(5)), the fields we use."""

    pid: int
    name: str  #: ``comm``: the executable's name, at most 15 bytes, without parentheses
    state: str  #: one letter: ``R`` running, ``S`` sleeping, ``Z`` zombie, ...
    ppid: int
    pgrp: int
    session: int
    utime: int  #: user CPU time, clock ticks (``os.sysconf("SC_CLK_TCK")`` a second)
    stime: int  #: system CPU time, clock ticks


def read_stat(pid: int) -> ProcStat | None:
    """``/proc/<pid>/stat`` parsed; ``None`` if the process is gone or the file unreadable.

    The name may hold spaces and parentheses: the fields after it start past the last
    ``)``.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
        end = raw.rindex(b")")
        fields = raw[end + 2 :].split()
        return ProcStat(
            pid=pid,
            name=raw[raw.index(b"(") + 1 : end].decode(errors="replace"),
            state=fields[0].decode(errors="replace"),
            ppid=int(fields[1]),
            pgrp=int(fields[2]),
            session=int(fields[3]),
            utime=int(fields[11]),
            stime=int(fields[12]),
        )
    except (OSError, ValueError, IndexError):
        return None


def read_status(pid: int | str) -> dict[str, str]:
    """``/proc/<pid>/status`` (``pid`` may be ``"self"``) as ``{field: value}``, values
    stripped; empty if the process is gone or the file unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    fields = (line.partition(":") for line in lines)
    return {key: value.strip() for key, colon, value in fields if colon}


def all_pids() -> list[int]:
    """The pids of every process in /proc now (of this pid namespace)."""
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (a zombie counts), also one of another user."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def set_undumpable() -> None:
    """``prctl(PR_SET_DUMPABLE, 0)`` on this process (its /proc files become root's)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
