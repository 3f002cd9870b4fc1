"""Marketplace end to end: jobs per second and submit-to-verified-result latency on a devnet.

A devnet (separate processes, py-libp2p on loopback) of a coordinator, a workspace and 3
contributors runs ``JOBS`` jobs of the sandbox's tiny ONNX model with ``IN_FLIGHT``
submitted at a time (redundancy 1; newcomer providers get one probation replica each, as
the marketplace decides). Latency is from ``POST /api/jobs`` to the job's verified result
being known to the workspace (``done``), measured by the submitting client.

The baseline is the same model and input run in-process with ONNX Runtime (an
``InferenceSession`` at graph optimization level EXTENDED, one thread), in the same run:
runs per second.

Usage: ``python bench/marketplace.py [--jobs 200] [--in-flight 16] [--contributors 3]``.
Prints a table, then one JSON line per figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path, and bench/ledger.py and
# bench/sandbox.py would shadow the packages of the same names: drop it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402

from node.api import Client  # noqa: E402
from node.devnet import running_devnet, tiny_model_and_inputs, wait_ready  # noqa: E402

BLOCK_MS = 100
BID_WINDOW_MS = 500


def in_process_runs_per_s(path: Path, inputs: dict[str, np.ndarray[Any, Any]], n: int) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session.run(None, inputs)
    t0 = time.perf_counter()
    for _ in range(n):
        session.run(None, inputs)
    return n / (time.perf_counter() - t0)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far (Linux /proc; 0 elsewhere)."""
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def run(jobs: int, in_flight: int, contributors: int, keep: Path | None = None) -> dict[str, Any]:
    path, inputs = tiny_model_and_inputs()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    timelines: list[list[dict[str, Any]]] = []
    lock = threading.Lock()
    next_job = iter(range(jobs))
    with tempfile.TemporaryDirectory(prefix="aimx-bench-") as tmp:
        root = str(keep) if keep is not None else tmp
        workspace_extra = f"[requester]\nbid_window_ms = {BID_WINDOW_MS}\ndeadline_ms = 60000\n"
        with running_devnet(
            Path(root),
            contributors,
            workspace_extra=workspace_extra,
            block_interval_ms=BLOCK_MS,
            contributor_extra=lambda i: "max_concurrency = 8\nwarm_workers = 2\n",
        ) as nodes:
            wait_ready(nodes)
            ws = next(n for n in nodes if n.name == "workspace")
            assert ws.info is not None
            # Warm up: first connections, and each contributor's warm workers (one per
            # concurrent job of this owner). Two rounds of `in_flight` jobs at once.
            with Client.for_data_dir(ws.data_dir) as c:
                for _ in range(2):
                    ids = [c.submit(path, inputs, redundancy=1) for _ in range(in_flight)]
                    for job_id in ids:
                        c.wait(job_id, timeout_s=60)

            def worker() -> None:
                with Client.for_data_dir(ws.data_dir) as client:
                    while True:
                        with lock:
                            if next(next_job, None) is None:
                                return
                        t0 = time.perf_counter()
                        job_id = client.submit(path, inputs, redundancy=1)
                        status = client.wait(job_id, timeout_s=120)
                        took = time.perf_counter() - t0
                        with lock:
                            latencies.append(took)
                            timelines.append(status.get("events", []))
                            key = status["status"]
                            if key == "failed":
                                key += ": " + status["reason"]
                            statuses[key] = statuses.get(key, 0) + 1

            threads = [threading.Thread(target=worker) for _ in range(in_flight)]
            pids = [n.proc.pid for n in nodes if n.proc is not None]
            cpu0 = cpu_seconds(pids)
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - start
            cpu = cpu_seconds(pids) - cpu0
    baseline = in_process_runs_per_s(path, inputs, 2000)
    return {
        "jobs": jobs,
        "elapsed": elapsed,
        "cpu_s": cpu,
        "latencies": latencies,
        "statuses": statuses,
        "timelines": timelines,
        "baseline": baseline,
    }


PHASES = ("announced", "locked", "awarded", "delivered", "done")


def phase_breakdown(timelines: list[list[dict[str, Any]]]) -> dict[str, tuple[float, float]]:
    """Median and p90 ms from one event to the next (first occurrence of each), per job."""
    gaps: dict[str, list[float]] = {}
    for events in timelines:
        first: dict[str, int] = {}
        for e in events:
            first.setdefault(str(e["event"]), int(e["at_ms"]))
        prev = "submitted"
        for name in PHASES:
            if prev in first and name in first:
                gaps.setdefault(f"{prev}->{name}", []).append(first[name] - first[prev])
            prev = name
    return {k: (statistics.median(v), percentile(v, 0.9)) for k, v in gaps.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--contributors", type=int, default=3)
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep the nodes' data dirs (and logs) here"
    )
    args = parser.parse_args()
    r = run(args.jobs, args.in_flight, args.contributors, args.keep)
    lat = r["latencies"]
    p50, p99 = percentile(lat, 0.50), percentile(lat, 0.99)
    jobs_per_s = len(lat) / r["elapsed"]
    print(
        f"marketplace: {len(lat)} jobs, {args.in_flight} in flight, "
        f"{args.contributors} contributors, block {BLOCK_MS} ms, bid window {BID_WINDOW_MS} ms"
    )
    print(f"  outcomes            {r['statuses']}")
    print(f"  jobs per second     {jobs_per_s:8.2f}   (target >= 20)")
    print(f"  submit->result p50  {p50:8.3f} s (target <= 0.5)")
    print(f"  submit->result p99  {p99:8.3f} s")
    print(f"  node CPU per job    {1000 * r['cpu_s'] / max(1, len(lat)):8.1f} ms (all daemons)")
    print(f"  mean                {statistics.mean(lat):8.3f} s")
    for name, (med, p90) in phase_breakdown(r["timelines"]).items():
        print(f"  {name:20s} median {med:7.0f} ms, p90 {p90:7.0f} ms")
    print(f"  in-process ORT      {r['baseline']:8.1f} runs per second (baseline)")
    base_latency = 1.0 / r["baseline"]
    for metric, value, baseline in (
        ("submit_to_result_p50_s", p50, base_latency),
        ("submit_to_result_p99_s", p99, base_latency),
        ("jobs_per_s", jobs_per_s, r["baseline"]),
    ):
        print(
            json.dumps(
                {
                    "bench": "marketplace",
                    "metric": metric,
                    "value": round(value, 6),
                    "baseline": round(baseline, 6),
                    "ratio": round(value / baseline, 6) if baseline else None,
                }
            )
        )


if __name__ == "__main__":
    main()
