"""Simulator speed and memory: events per second, simulated node-hours per wall second and
peak RSS per 1,000 nodes, for shipped scenarios.

The baseline, measured in the same run, is a plain heap of empty events: ``heapq`` holding
``HEAP_PENDING`` pending ``(time_ms, seq, None)`` entries, each pop followed by one push at
a random later time, and nothing done per event. It is the most a heap-driven loop in
this interpreter can deliver; a scenario's events per second is set against it.

Each scenario runs in a fresh process (so its peak RSS is its own): its events per second
(the engine's event count over the wall time of ``simulations.run``), simulated node-hours
per wall second (all nodes x simulated hours / wall seconds), peak RSS, and peak RSS per
1,000 nodes both as measured and above the process's RSS after imports. Where a scenario
has adversaries, also the marketplace's figures: the share of accepted results that were
correct, the most jobs an adversary worked before it was refused, and compute over the
honest minimum.

Usage: ``python bench/simulator.py [--scenario smoke] [--scale] [--seed 1] [--keep DIR]``.
``--scenario`` takes a shipped scenario's name or a path (repeatable; default smoke);
``--scale`` adds scale-100k (10 minutes and several GiB). Prints a table, then one JSON line
per figure.
"""

from __future__ import annotations

import argparse
import csv
import heapq
import json
import multiprocessing
import random
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path, and bench/ledger.py and
# bench/sandbox.py would shadow the packages of the same names: drop it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

SCENARIOS = _HERE.parent / "simulations" / "scenarios"
HEAP_PENDING = 10_000
HEAP_EVENTS = 2_000_000
#: scale-100k's targets (issue 16).
SCALE_WALL_S = 600.0
SCALE_RSS_MB = 8 * 1024.0
SCALE_JOBS = 100_000
#: cheaters' targets with the best policy (issue 16).
CORRECT_SHARE = 0.999
DETECTION_JOBS = 20
COMPUTE_RATIO = 1.3


def heap_baseline(events: int = HEAP_EVENTS, pending: int = HEAP_PENDING) -> float:
    """Empty events per second through a plain heap (pop one, push one)."""
    rng = random.Random(1)
    draw = rng.random
    heap = [(int(draw() * 1000), i, None) for i in range(pending)]
    heapq.heapify(heap)
    pop, push = heapq.heappop, heapq.heappush
    seq = pending
    t0 = time.perf_counter()
    for _ in range(events):
        now, _seq, _event = pop(heap)
        seq += 1
        push(heap, (now + 1 + int(draw() * 100), seq, None))
    return events / (time.perf_counter() - t0)


def rss_mb() -> float:
    """Peak RSS of this process so far, MB: ``VmHWM`` of /proc/self/status where there is
    one (``ru_maxrss`` on Linux keeps the parent's peak across exec, so a fresh process
    would report the bench's own), else ``ru_maxrss`` (kB on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(path: str, seed: int, out: str) -> dict[str, Any]:
    """In a fresh process: run the scenario, return its summary and what it cost."""
    import simulations

    base = rss_mb()
    t0 = time.perf_counter()
    simulations.run(Path(path), seed, Path(out))
    wall = time.perf_counter() - t0
    summary: dict[str, Any] = json.loads((Path(out) / "summary.json").read_text())
    detection_jobs = []
    with (Path(out) / "providers.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            if row.get("kind", "honest") != "honest" and row.get("jobs_before_detection"):
                detection_jobs.append(float(row["jobs_before_detection"]))
    return {
        "summary": summary,
        "wall_s": wall,
        "rss_base_mb": base,
        "rss_peak_mb": rss_mb(),
        "detection_jobs": detection_jobs,
    }


def scenario_path(name: str) -> Path:
    path = Path(name)
    if path.suffix == ".toml" or path.exists():
        return path
    return SCENARIOS / f"{name}.toml"


def measure(path: Path, seed: int, keep: Path | None) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="aimx-bench-sim-") as tmp:
        out = (keep / path.stem) if keep is not None else Path(tmp) / path.stem
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            r: dict[str, Any] = pool.submit(run_one, str(path), seed, str(out)).result()
        if keep is not None:
            from simulations.report import build_report

            r["report"] = str(build_report(out))
    return r


def figures(name: str, r: dict[str, Any]) -> dict[str, float]:
    s = r["summary"]
    nodes = sum(int(s["nodes"][role]) for role in ("providers", "requesters", "coordinators"))
    wall = r["wall_s"]
    jobs = s["jobs"]
    out = {
        "nodes": float(nodes),
        "events": float(s["events"]),
        "wall_s": wall,
        "events_per_s": s["events"] / wall,
        "node_hours_per_wall_s": nodes * s["sim_seconds"] / 3600.0 / wall,
        "peak_rss_mb": r["rss_peak_mb"],
        "rss_per_1000_nodes_mb": r["rss_peak_mb"] / nodes * 1000.0,
        "rss_above_imports_per_1000_nodes_mb": (r["rss_peak_mb"] - r["rss_base_mb"])
        / nodes
        * 1000.0,
        "jobs_submitted": float(jobs["submitted"]),
        "jobs_verified": float(jobs["verified"]),
        "compute_ratio": float(s["compute"]["ratio"]),
    }
    accepted = jobs["correct_accepted"] + jobs["wrong_accepted"]
    if accepted:
        out["correct_share"] = jobs["correct_accepted"] / accepted
    if r["detection_jobs"]:
        out["max_jobs_to_detection"] = max(r["detection_jobs"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", default=None, help="name or path")
    parser.add_argument("--scale", action="store_true", help="also run scale-100k")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="keep output dirs and reports")
    parser.add_argument("--baseline-events", type=int, default=HEAP_EVENTS)
    args = parser.parse_args()
    names = list(args.scenario or ["smoke"])
    if args.scale and "scale-100k" not in names:
        names.append("scale-100k")

    baseline = heap_baseline(args.baseline_events)
    print(f"simulator bench, seed {args.seed}")
    print(f"  plain heap, empty events  {baseline:12,.0f} events/s (baseline)")
    lines = []
    for name in names:
        path = scenario_path(name)
        if not path.is_file():
            sys.exit(f"error: no scenario {path}; give a shipped name or a .toml path")
        r = measure(path, args.seed, args.keep)
        f = figures(name, r)
        s = r["summary"]
        print(
            f"{path.stem}: {int(f['nodes']):,} nodes, {s['sim_seconds']:.0f} simulated s, "
            f"trace {s['trace_hash'][:16]}{', verify cache ON' if s.get('verify_cache') else ''}"
        )
        print(f"  wall                      {f['wall_s']:12.1f} s")
        print(f"  events                    {f['events']:12,.0f}")
        print(
            f"  events per second         {f['events_per_s']:12,.0f}   "
            f"({f['events_per_s'] / baseline:.3f} of the heap baseline)"
        )
        print(f"  node-hours per wall s     {f['node_hours_per_wall_s']:12.1f}")
        print(f"  peak RSS                  {f['peak_rss_mb']:12.1f} MB")
        print(
            f"  per 1,000 nodes           {f['rss_per_1000_nodes_mb']:12.2f} MB "
            f"({f['rss_above_imports_per_1000_nodes_mb']:.2f} MB above imports)"
        )
        print(
            f"  jobs submitted, verified  {int(f['jobs_submitted']):>12,} "
            f"{int(f['jobs_verified']):,}"
        )
        print(
            f"  compute / honest minimum  {f['compute_ratio']:12.3f}   "
            f"(target <= {COMPUTE_RATIO} with adversaries)"
        )
        if "correct_share" in f:
            print(
                f"  accepted results correct  {f['correct_share']:12.5f}   "
                f"(target >= {CORRECT_SHARE})"
            )
        if "max_jobs_to_detection" in f:
            print(
                f"  most jobs before refused  {f['max_jobs_to_detection']:12.0f}   "
                f"(target <= {DETECTION_JOBS})"
            )
        if path.stem == "scale-100k":
            ok = (
                f["wall_s"] < SCALE_WALL_S
                and f["peak_rss_mb"] < SCALE_RSS_MB
                and f["jobs_submitted"] >= SCALE_JOBS
            )
            print(
                f"  scale targets (< {SCALE_WALL_S:.0f} s, < 8 GiB, >= {SCALE_JOBS:,} jobs): "
                f"{'met' if ok else 'NOT met'}"
            )
        if "report" in r:
            print(f"  report                    {r['report']}")
        lines.append((path.stem, f))
    for stem, f in lines:
        for metric in (
            "events_per_s",
            "node_hours_per_wall_s",
            "rss_per_1000_nodes_mb",
            "wall_s",
            "compute_ratio",
            "correct_share",
            "max_jobs_to_detection",
        ):
            if metric not in f:
                continue
            base = baseline if metric == "events_per_s" else None
            print(
                json.dumps(
                    {
                        "bench": "simulator",
                        "scenario": stem,
                        "metric": metric,
                        "value": round(f[metric], 6),
                        "baseline": round(base, 6) if base else None,
                        "ratio": round(f[metric] / base, 6) if base else None,
                    }
                )
            )


if __name__ == "__main__":
    main()
