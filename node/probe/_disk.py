"""Disk: free space on the file system that holds the data directory."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class DiskReport:
    """The ``disk`` section of the probe: the file system holding the data directory."""

    path: str
    total_bytes: int
    free_bytes: int


def read_disk(data_dir: Path) -> DiskReport:
    """Space on the file system of ``data_dir`` (or of its nearest existing parent)."""
    path = Path(data_dir).expanduser().absolute()
    for _ in range(len(path.parts)):
        if path.exists():
            break
        path = path.parent
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return DiskReport(str(path), 0, 0)
    return DiskReport(str(path), usage.total, usage.free)
