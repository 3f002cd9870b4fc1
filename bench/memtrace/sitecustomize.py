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
"""

from __future__ import annotations

import os
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
