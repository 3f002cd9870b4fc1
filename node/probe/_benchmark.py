"""The benchmark score: a fixed ONNX workload timed on this machine's CPU.

Score = the workload's floating-point operations per second at the median run time, in
MFLOP/s, as an integer (``flops_per_run * 1000 // median_ns``). It uses the settings jobs
use (CPUExecutionProvider, graph optimization EXTENDED, one intra-op thread per usable core).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from ._onnx_models import workload

WARMUP_RUNS = 2
MIN_RUNS = 5
MAX_RUNS = 50
BUDGET_NS = 600_000_000  # stop adding runs (beyond MIN_RUNS) after this much time


@dataclass(frozen=True, slots=True)
class BenchmarkReport:
    """The ``benchmark`` section of the probe (see specs/probe.md)."""

    workload: str
    workload_hash: str
    flops_per_run: int
    provider: str
    threads: int
    runs: int
    median_ns: int
    score: int
    reason: str | None = None


def median_ns(times_ns: Sequence[int]) -> int:
    """The median of run times (the mean of the middle two for an even count, rounded down)."""
    if not times_ns:
        raise ValueError("no runs to take the median of")
    ordered = sorted(times_ns)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) // 2


def score(flops_per_run: int, times_ns: Sequence[int]) -> int:
    """MFLOP/s at the median run time: ``flops_per_run * 1000 // median_ns``."""
    return flops_per_run * 1000 // max(1, median_ns(times_ns))


def run_benchmark(
    threads: int,
    *,
    clock: Callable[[], int] = time.perf_counter_ns,
    min_runs: int = MIN_RUNS,
    max_runs: int = MAX_RUNS,
    budget_ns: int = BUDGET_NS,
) -> BenchmarkReport:
    """Time the workload: a few warm-up runs, then between ``min_runs`` and ``max_runs``."""
    w = workload()
    empty = BenchmarkReport(w.name, w.model_hash, w.flops, "CPUExecutionProvider", threads, 0, 0, 0)
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return replace(empty, reason=f"onnxruntime cannot be imported: {exc}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(w.model, options, providers=["CPUExecutionProvider"])
        feed = {w.input_name: w.input}
        for _ in range(WARMUP_RUNS):
            session.run(None, feed)
        times: list[int] = []
        started = clock()
        while len(times) < max_runs and (len(times) < min_runs or clock() - started < budget_ns):
            t0 = clock()
            session.run(None, feed)
            times.append(clock() - t0)
    except Exception as exc:  # onnxruntime raises many unrelated types
        return replace(empty, reason=f"the benchmark failed: {exc}")
    return BenchmarkReport(
        w.name,
        w.model_hash,
        w.flops,
        "CPUExecutionProvider",
        threads,
        len(times),
        median_ns(times),
        score(w.flops, times),
    )
