"""Memory: /proc/meminfo and the memory limits of this process's cgroups."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ._sysfs import read_cgroup_files, read_text

# cgroup v1 writes "no limit" as a huge number (PAGE_COUNTER_MAX pages in bytes).
_V1_UNLIMITED = 1 << 62


@dataclass(frozen=True, slots=True)
class MemoryReport:
    """The ``memory`` section of the probe (see specs/probe.md)."""

    total_bytes: int
    available_bytes: int
    cgroup_limit_bytes: int | None


def parse_meminfo(text: str) -> tuple[int, int]:
    """``(MemTotal, MemAvailable)`` in bytes from /proc/meminfo (MemFree if no MemAvailable)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or not fields or not fields[0].isdigit():
            continue
        unit = fields[1].lower() if len(fields) > 1 else ""
        values[key.strip()] = int(fields[0]) * (1024 if unit == "kb" else 1)
    total = values.get("MemTotal", 0)
    available = values.get("MemAvailable", values.get("MemFree", 0))
    return total, available


def parse_cgroup_memory_max(text: str) -> int | None:
    """A cgroup ``memory.max`` (v2) or ``memory.limit_in_bytes`` (v1) in bytes; None: no limit."""
    value = text.strip()
    if not value.isdigit():
        return None  # "max", or unreadable
    limit = int(value)
    return None if limit >= _V1_UNLIMITED else limit


def read_memory() -> MemoryReport:
    """Probe this machine's memory and the memory limit of this process's cgroups."""
    total, available = parse_meminfo(read_text(Path("/proc/meminfo")) or "")
    texts = read_cgroup_files("memory.max") + read_cgroup_files("memory.limit_in_bytes", "memory")
    limits = [x for x in map(parse_cgroup_memory_max, texts) if x is not None]
    return MemoryReport(total, available, min(limits) if limits else None)
