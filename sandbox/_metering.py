"""A job's usage and how its end becomes an :class:`~sandbox.Outcome`: the usage the worker
reports, added up and bounded; the kernel's figures for a worker that died or was killed
(rusage, cgroup CPU time and peak memory) and the kind of its end (CPU limit, timeout,
file size, memory limit, crash)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import protocol

from ._job import Limits, Outcome
from ._worker_handle import WorkerHandle

ZERO = protocol.Usage(cpu_ms=0, wall_ms=0, peak_memory_kb=0, gpu_ms=0)


def failed(kind: str, message: str, usage: protocol.Usage = ZERO) -> Outcome:
    return Outcome(kind=kind, message=message, usage=usage)


def usage_since(t0: float) -> protocol.Usage:
    return protocol.Usage(
        cpu_ms=0, wall_ms=int((time.monotonic() - t0) * 1000), peak_memory_kb=0, gpu_ms=0
    )


#: The most a usage figure may be (a u64 on the wire; far above any real run's).
_MAX_FIGURE = (1 << 63) - 1


def add_usage(usage: protocol.Usage, reply: dict[str, Any]) -> protocol.Usage:
    """``usage`` plus the usage a worker's reply reports (ignored when malformed)."""
    u = reply.get("usage") or {}

    def figure(name: str) -> int:
        # clamped: a worker's figure of 2^64 - 1 overflowed the u64 sum, and the error
        # escaped the run, which was reported `rejected` (review round 75, F4)
        return min(max(0, int(u.get(name, 0))), _MAX_FIGURE)

    try:
        return protocol.Usage(
            cpu_ms=min(usage.cpu_ms + figure("cpu_ms"), _MAX_FIGURE),
            wall_ms=min(usage.wall_ms + figure("wall_ms"), _MAX_FIGURE),
            peak_memory_kb=max(usage.peak_memory_kb, figure("peak_kb")),
            gpu_ms=min(usage.gpu_ms + figure("gpu_ms"), _MAX_FIGURE),
        )
    except (TypeError, ValueError, AttributeError, protocol.ProtocolError):
        return usage


def runtime_us(reply: dict[str, Any], usage: protocol.Usage) -> int:
    """The worker's figure when it is plausible (an integer within its wall time)."""
    value = reply.get("runtime_us")
    if type(value) is not int or not 0 <= value <= (usage.wall_ms + 1) * 1000:
        return 0
    return value


def worker_error(reply: dict[str, Any], usage: protocol.Usage) -> Outcome:
    """The outcome of a job whose worker answered with an error."""
    kind = str(reply.get("kind", "runtime_error"))
    if kind not in protocol.OUTCOMES or kind == "ok":
        kind = "runtime_error"
    return failed(kind, str(reply.get("message", ""))[:1000], usage)


def ended(
    worker: WorkerHandle, t0: float, limits: Limits, *, timed_out: bool, via_bwrap: bool
) -> Outcome:
    """Classify a worker that died or was killed (reaping it first). ``t0``: when the
    request it was serving was sent; ``via_bwrap``: bubblewrap runs it."""
    worker.wait()
    ru = worker.rusage
    cpu_s = (ru.ru_utime + ru.ru_stime) if ru is not None else 0.0
    peak_kb = int(ru.ru_maxrss) if ru is not None else 0
    if worker.cgroup is not None:
        peak_kb = max(peak_kb, worker.cgroup.peak_bytes() // 1024)
        # The kernel's count of the job's CPU time: the rusage above is bubblewrap's
        # when it runs the worker, and misses a worker killed under it.
        used_ns = worker.cgroup.cpu_ns()
        if used_ns is not None and worker.cpu_base_ns is not None:
            cpu_s = max(0, used_ns - worker.cpu_base_ns) / 1e9
    usage = protocol.Usage(
        cpu_ms=int(cpu_s * 1000),
        wall_ms=int((time.monotonic() - t0) * 1000),
        peak_memory_kb=peak_kb,
        gpu_ms=0,
    )
    sig = _signal_of(worker.status, via_bwrap)
    oom = worker.cgroup is not None and worker.cgroup.oom_killed()
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s >= limits.cpu_s - 0.5):
        usage = protocol.Usage(
            cpu_ms=max(usage.cpu_ms, limits.cpu_s * 1000),
            wall_ms=usage.wall_ms,
            peak_memory_kb=usage.peak_memory_kb,
            gpu_ms=0,
        )
        return failed("cpu_limit", f"the job used its CPU limit of {limits.cpu_s} s", usage)
    if timed_out:
        return failed(
            "timeout", f"the job did not finish within {limits.wall_ms} ms (killed)", usage
        )
    if sig == signal.SIGXFSZ:
        return failed(
            "output_limit", f"the job wrote a file beyond {limits.file_bytes} bytes", usage
        )
    if oom:
        return failed(
            "memory_limit",
            f"the job exceeded its memory limit of {limits.memory_mb} MiB",
            usage,
        )
    tail = worker.stderr_tail()
    how = f"signal {_signal_name(sig)}" if sig else f"exit status {worker.status}"
    return failed("crashed", f"the worker died ({how}){': ' + tail if tail else ''}", usage)


def _signal_of(status: int | None, via_bwrap: bool) -> int:
    if status is None:
        return 0
    if os.WIFSIGNALED(status):
        return os.WTERMSIG(status)
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        if via_bwrap and 128 < code < 128 + 65:
            return code - 128
    return 0


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:  # a number that is no signal here (an odd exit status through bwrap)
        return str(sig)
