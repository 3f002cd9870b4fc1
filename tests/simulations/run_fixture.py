"""Output directories written by hand in the format of specs/simulator.md ("Output"), so the
report, compare and sweep code is tested on known data without running the engine."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

SCENARIO_TOML = """# a hand-written fixture scenario
name = "{name}"
duration_s = 600

[nodes]
providers = {providers}
requesters = 5
coordinators = 1
"""

SERIES = [
    "t_s",
    "submitted",
    "verified",
    "failed",
    "online_providers",
    "busy_providers",
    "ledger_height",
    "ledger_bytes",
    "mempool",
]
JOBS = [
    "job_id",
    "requester",
    "submitted_s",
    "finished_s",
    "outcome",
    "reason",
    "redundancy",
    "replicas_run",
    "bids",
    "price",
    "compute_s",
    "correct",
]
PROVIDERS = [
    "node",
    "kind",
    "tier",
    "jobs_won",
    "jobs_paid",
    "earned",
    "refused",
    "first_wrong_s",
    "detected_s",
    "jobs_before_detection",
]


def _write(path: Path, header: list[str], rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)


def write_run(
    out: Path,
    *,
    name: str = "fixture",
    seed: int = 1,
    jobs: int = 200,
    providers: int = 40,
    cheaters: int = 4,
    slow: float = 1.0,
    summary_extra: dict[str, Any] | None = None,
) -> Path:
    """One run's output directory; ``slow`` scales the latencies (compare tests use it)."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scenario.toml").write_text(SCENARIO_TOML.format(name=name, providers=providers))
    job_rows, latencies, verified, failed = [], [], 0, 0
    for j in range(jobs):
        submitted = j * 600 / jobs
        ok = rng.random() > 0.1
        lat = rng.uniform(1, 5) * slow
        replicas = rng.choice([1, 1, 1, 2])
        row = {
            "job_id": f"job{j:04d}",
            "requester": f"r{j % 5}",
            "submitted_s": f"{submitted:.3f}",
            "finished_s": f"{submitted + lat:.3f}",
            "outcome": "verified" if ok else "failed",
            "reason": "" if ok else "no_bids",
            "redundancy": 1,
            "replicas_run": replicas,
            "bids": rng.randint(1, 8),
            "price": 10,
            "compute_s": 2.0 * replicas,
            "correct": 1 if ok else "",
        }
        if ok:
            verified += 1
            latencies.append(lat)
        else:
            failed += 1
        job_rows.append(row)
    _write(out / "jobs.csv", JOBS, job_rows)
    prov_rows = []
    for p in range(providers):
        kind = "cheater" if p < cheaters else "honest"
        first_wrong = rng.uniform(0, 100) if kind == "cheater" else None
        detected = first_wrong + rng.uniform(5, 60) if first_wrong is not None and p else None
        prov_rows.append(
            {
                "node": f"p{p:03d}",
                "kind": kind,
                "tier": "cpu",
                "jobs_won": p % 9,
                "jobs_paid": p % 7,
                "earned": (p % 7) * 10,
                "refused": 1 if kind == "cheater" else 0,
                "first_wrong_s": "" if first_wrong is None else f"{first_wrong:.3f}",
                "detected_s": "" if detected is None else f"{detected:.3f}",
                "jobs_before_detection": "" if detected is None else rng.randint(1, 15),
            }
        )
    _write(out / "providers.csv", PROVIDERS, prov_rows)
    series_rows = []
    for i in range(61):
        t = i * 10
        series_rows.append(
            {
                "t_s": t,
                "submitted": min(jobs, i * jobs // 60),
                "verified": 0,
                "failed": 0,
                "online_providers": providers - i % 3,
                "busy_providers": i % 5,
                "ledger_height": i * 10,
                "ledger_bytes": i * 5000,
                "mempool": i % 4,
            }
        )
    _write(out / "series.csv", SERIES, series_rows)
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    summary: dict[str, Any] = {
        "scenario": name,
        "seed": seed,
        "trace_hash": f"{seed:064x}",
        "sim_seconds": 600.0,
        "wall_seconds": 1.5,
        "events": 12345,
        "nodes": {"providers": providers, "requesters": 5, "coordinators": 1},
        "jobs": {
            "submitted": jobs,
            "verified": verified,
            "failed": failed,
            "correct_accepted": verified,
            "wrong_accepted": 0,
        },
        "latency_s": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99)},
        "bids_per_job": {"mean": 4.5, "p50": 4},
        "compute": {"used_s": 1000.0, "honest_min_s": 800.0, "ratio": 1.25},
        "earnings": {"gini": 0.3, "honest_mean": 30.0, "cheater_mean": 5.0},
        "adversaries": {
            "cheater": {
                "count": cheaters,
                "detected": cheaters - 1,
                "median_jobs_to_detection": 7.0,
                "median_s_to_detection": 30.0,
            }
        },
        "ledger": {"height": 600, "bytes": 300000, "conserved": True},
        "verify_cache": False,
        "peak_rss_mb": 80.0,
    }
    summary.update(summary_extra or {})
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return out
