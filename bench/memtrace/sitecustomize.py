"""Allocation growth of a daemon under soak, from ``tracemalloc`` (``bench/soak.py
--tracemalloc DIR``).

Python imports ``sitecustomize`` at start-up from ``PYTHONPATH``; the soak puts this
directory there for the daemons it traces, with ``AIMX_TRACEMALLOC_OUT`` naming the file to
write. Tracing starts only once warm-up is over (``AIMX_TRACEMALLOC_START_S``): traced from
the start, a daemon is several times slower to start and falls behind its peers. A first
snapshot follows ``AIMX_TRACEMALLOC_EVERY_S`` seconds later; then every as many seconds a
thread writes the places whose live allocations grew most since it (grouped by
traceback), with the traced total beside the process's RSS: growth that ``tracemalloc``
does not see is outside Python's allocator (a C library's heap, fragmentation).

``tracemalloc`` costs memory of its own, which shows in RSS. ``AIMX_MEMSTATS_OUT`` (``bench/soak.py
--memstats DIR``) traces nothing: every ``AIMX_MEMSTATS_EVERY_S`` seconds it appends one
JSON line with the process's RSS, what SQLite holds (``sqlite3_memory_used``: its page
caches), glibc malloc's bytes in use and free (``mallinfo2``) and Python's allocated
blocks, so that RSS growth can be told apart: Python objects, SQLite's caches, or memory
malloc holds free (fragmentation); every ``AIMX_MEMSTATS_TYPES_EVERY`` lines (5) it adds
the most numerous types the collector tracks (``gc.get_objects``: about half a second of
the daemon's time, so not often), to find what accumulates.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path

_FRAMES = 6
_TOP = 25


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _memstats() -> dict[str, int]:
    """RSS, SQLite's memory, malloc's in-use and free bytes, Python's blocks (0 for what
    this platform does not tell)."""
    out = {"rss_kb": _rss_kb(), "py_blocks": sys.getallocatedblocks()}
    try:
        import _sqlite3  # noqa: F401  (loads the library the sqlite3 module uses)

        lib = ctypes.CDLL("libsqlite3.so.0")
        lib.sqlite3_memory_used.restype = ctypes.c_int64
        out["sqlite_kb"] = lib.sqlite3_memory_used() // 1024
    except (OSError, AttributeError, ImportError):
        out["sqlite_kb"] = 0
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
        out["malloc_used_kb"] = (info.uordblks + info.hblkhd) // 1024
        out["malloc_free_kb"] = info.fordblks // 1024
    except (OSError, AttributeError):
        out["malloc_used_kb"] = out["malloc_free_kb"] = 0
    return out


def _type_counts(top: int = 40) -> dict[str, int]:
    """The ``top`` most numerous types among the objects the collector tracks (containers
    and instances: what accumulates when a structure keeps what it should let go)."""
    import collections
    import gc

    counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    return dict(counts.most_common(top))


def _stats(out: Path, every_s: float, types_every: int) -> None:
    started = time.monotonic()
    n = 0
    while True:
        line: dict[str, object] = {"t": round(time.monotonic() - started), **_memstats()}
        if types_every and n % types_every == 0:
            line["types"] = _type_counts()
        with out.open("a") as f:
            f.write(json.dumps(line) + "\n")
        n += 1
        time.sleep(every_s)


def _watch(out: Path, start_s: float, every_s: float) -> None:
    time.sleep(start_s)
    tracemalloc.start(_FRAMES)
    time.sleep(every_s)
    base = tracemalloc.take_snapshot()
    base_rss = _rss_kb()
    base_traced = tracemalloc.get_traced_memory()[0]
    started = time.monotonic()
    while True:
        time.sleep(every_s)
        snap = tracemalloc.take_snapshot()
        stats = snap.compare_to(base, "traceback")
        traced = tracemalloc.get_traced_memory()[0]
        lines = [
            f"after {time.monotonic() - started:.0f} s past warm-up: "
            f"RSS {(_rss_kb() - base_rss):+d} KB, traced {(traced - base_traced) / 1024:+.0f} KB",
        ]
        for stat in stats[:_TOP]:
            lines.append(
                f"\n{stat.size_diff / 1024:+.1f} KB  {stat.count_diff:+d} blocks  "
                f"(now {stat.size / 1024:.1f} KB in {stat.count})"
            )
            lines.extend(f"    {line}" for line in stat.traceback.format())
        tmp = out.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(out)


_stats_out = os.environ.get("AIMX_MEMSTATS_OUT")
if _stats_out:
    threading.Thread(
        target=_stats,
        args=(
            Path(_stats_out),
            float(os.environ.get("AIMX_MEMSTATS_EVERY_S", "60")),
            int(os.environ.get("AIMX_MEMSTATS_TYPES_EVERY", "5")),
        ),
        daemon=True,
        name="aimx-memstats",
    ).start()

_out = os.environ.get("AIMX_TRACEMALLOC_OUT")
if _out:
    threading.Thread(
        target=_watch,
        args=(
            Path(_out),
            float(os.environ.get("AIMX_TRACEMALLOC_START_S", "600")),
            float(os.environ.get("AIMX_TRACEMALLOC_EVERY_S", "120")),
        ),
        daemon=True,
        name="aimx-tracemalloc",
    ).start()
