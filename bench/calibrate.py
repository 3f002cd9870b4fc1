"""Calibration: the simulator against a devnet of real daemons, one small scenario on both.

The scenario (``simulations/scenarios/calibration.toml``): one coordinator, one workspace,
``--contributors`` contributors; ``--jobs`` jobs of the sandbox's tiny ONNX model arriving
as a Poisson stream at ``--rate`` a second; redundancy 1, then 2 (``--redundancy``); the
devnet's block interval.

1. The tiny model is measured in the sandbox as a contributor runs it: a warm run, a cold
   one on the spare worker, a cold one that starts its own worker.
2. For each redundancy a fresh devnet of separate daemon processes
   (``node.devnet.running_devnet``, py-libp2p on loopback) runs the jobs, submitted through
   the workspace's API; each job's record (``GET /api/jobs/<id>``: its timed events) is read
   once its escrow has closed, and the contributors' logs give each run's time and fetch.
3. The simulator runs the scenario twice per redundancy, with the devnet's node counts,
   block interval, bid window, deadline, model size, redundancy, arrival rate and number
   of jobs: with the file's costs (fitted to an earlier devnet run), and fitted to this
   run (the sandbox start-ups of step 1; the message latency, block delay, the daemon's
   own run time and a model's first fetch read off the devnet at the first redundancy:
   the other redundancies are held out).

Each comparison prints the jobs submitted / verified / failed on each side and each
phase's p50 / p90 / p99 in ms on each, with the ratio sim / devnet
(``simulations.calibration``); a phase whose p50 differs beyond 2x either way is marked
``!``. Then the devnet's diagnosis and one JSON line per redundancy.

Run under ``flock /tmp/lead/heavy.lock`` on a shared machine (a few minutes):
``python bench/calibrate.py [--jobs 40] [--rate 0.5] [--out DIR]``; ``--devnet-from DIR``
takes the measurements and devnet records saved by an earlier run (``DIR/measured.json``,
``DIR/devnet-r<k>.json``) and runs the simulator only.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import simulations  # noqa: E402
from node.api import Client  # noqa: E402
from node.devnet import running_devnet, tiny_model_and_inputs, wait_ready  # noqa: E402
from simulations import calibration  # noqa: E402

SCENARIO = simulations.SCENARIOS_DIR / "calibration.toml"
#: The contributor's log line for a run (node/daemon/runs.py).
_RUN_LINE = re.compile(
    r"job ([0-9a-f]+): ok in (\d+) ms \((warm|cold) worker, data fetched in (\d+) ms\)"
)


def measure_sandbox(repeat: int) -> dict[str, float]:
    """The tiny model in the sandbox as a contributor runs it: ``run_ms`` (median wall ms
    of a job on a warm worker of the same owner), ``startup_ms`` (a cold job, a spare
    worker ready as a contributor keeps one, less ``run_ms``) and ``worker_start_ms`` (a
    cold job with no spare: it starts its worker; fewer samples, each takes a while)."""
    import protocol
    import sandbox

    path, inputs = tiny_model_and_inputs()
    model = path.read_bytes()
    digest = protocol.content_hash(model)
    config = sandbox.SandboxConfig(pool_size=2)
    warm, cold = [], []
    with sandbox.Sandbox(config) as box:
        for k in range(repeat):
            assert box.prepare("onnx"), "no spare sandbox worker could be started"
            t = time.perf_counter()
            job = sandbox.JobRequest("onnx", model, inputs, owner=f"cold-{k}".encode())
            outcome = box.run(job)
            cold.append(time.perf_counter() - t)
            if not outcome.ok:
                raise SystemExit(f"the tiny model failed in the sandbox: {outcome.message}")
        job = sandbox.JobRequest("onnx", model, inputs, owner=b"calibrate", model_hash=digest)
        box.run(job)
        for _ in range(repeat):
            t = time.perf_counter()
            box.run(job)
            warm.append(time.perf_counter() - t)
    fresh = []
    with sandbox.Sandbox(sandbox.SandboxConfig(pool_size=2, spare_workers=0)) as box:
        for k in range(max(2, repeat // 4)):
            t = time.perf_counter()
            box.run(sandbox.JobRequest("onnx", model, inputs, owner=f"fresh-{k}".encode()))
            fresh.append(time.perf_counter() - t)
    run_ms = statistics.median(warm) * 1000
    return {
        "run_ms": round(run_ms, 2),
        "startup_ms": round(max(0.0, statistics.median(cold) * 1000 - run_ms), 1),
        "worker_start_ms": round(max(0.0, statistics.median(fresh) * 1000 - run_ms), 1),
    }


def run_devnet(
    root: Path, redundancy: int, args: argparse.Namespace, sc: simulations.Scenario
) -> tuple[list[dict[str, Any]], list[tuple[str, int, str, int]]]:
    """The jobs on a fresh devnet: their API records and the contributors' runs (job id
    prefix, run ms, warm or cold worker, fetch ms) from their logs."""
    path, inputs = tiny_model_and_inputs()
    extra = f"[requester]\nbid_window_ms = {sc.jobs.bid_window_ms}\n"
    deadline_s = sc.jobs.deadline_s
    with running_devnet(
        root, args.contributors, workspace_extra=extra, block_interval_ms=sc.block_ms
    ) as nodes:
        wait_ready(nodes)
        ws = next(n for n in nodes if n.name == "workspace")
        ids: list[str] = []
        errors: list[str] = []
        lock = threading.Lock()

        def submit() -> None:
            try:
                with Client.for_data_dir(ws.data_dir) as c:
                    job_id = c.submit(path, inputs, redundancy=redundancy, deadline_s=deadline_s)
            except Exception as exc:  # counted and printed; the others go on
                with lock:
                    errors.append(str(exc)[:200])
                return
            with lock:
                ids.append(job_id)

        rng = random.Random(f"calibrate/{args.seed}/{redundancy}")
        start = time.monotonic()
        at = 0.0
        threads = []
        for _ in range(args.jobs):
            at += rng.expovariate(args.rate)
            time.sleep(max(0.0, start + at - time.monotonic()))
            t = threading.Thread(target=submit, daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join(60)
        if errors:
            print(f"  {len(errors)} submissions failed: {errors[0]}", flush=True)
        records = []
        with ws.client(timeout_s=60) as c:
            for job_id in ids:
                c.wait(job_id, until="closed", timeout_s=deadline_s + 120)
                records.append(c.job(job_id))
        runs = []
        for n in nodes:
            if "contributor" in n.roles:
                text = (n.data_dir / "node.log").read_text(errors="replace")
                for m in _RUN_LINE.finditer(text):
                    runs.append((m.group(1), int(m.group(2)), m.group(3), int(m.group(4))))
    return records, runs


def _p50(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def diagnose(
    jobs: list[calibration.JobTimes], runs: list[list[Any]], sc: simulations.Scenario
) -> dict[str, Any]:
    """Where the devnet's time goes, from its records and the contributors' logs: the
    runs (warm and cold, in the sandbox, and the data fetch before them); per job, the
    deliver phase less its slowest run and fetch (two messages: the award and the result);
    the lock phase less the mean wait for a block (``block_ms / 2``): the transaction's
    way in and the block's way back."""
    by_job: dict[str, list[float]] = {}
    for prefix, run_ms, _, fetch_ms in runs:
        by_job.setdefault(prefix, []).append(float(run_ms + fetch_ms))
    messages = []
    for j in jobs:
        deliver = j.phase_ms("awarded", "delivered")
        spent = by_job.get(j.job_id[:12], [])
        if deliver is not None and spent:
            messages.append(deliver - max(spent))
    warm = [float(r[1]) for r in runs if r[2] == "warm"]
    cold = [float(r[1]) for r in runs if r[2] == "cold"]
    fetch = [float(r[3]) for r in runs if r[3] > 0]
    lock = [float(v) for j in jobs if (v := j.phase_ms("submitted", "locked")) is not None]
    return {
        "runs": len(runs),
        "run_warm_p50_ms": _p50(warm),
        "run_cold_ms": sorted(cold),
        "fetch_p50_ms (first fetch of the model)": _p50(fetch),
        "deliver_less_run_p50_ms (award + result messages)": _p50(messages),
        "lock_less_half_block_p50_ms (tx in + block back)": (
            round(statistics.median(lock) - sc.block_ms / 2, 1) if lock else None
        ),
    }


def fit(diagnosis: dict[str, Any], measured: dict[str, Any]) -> dict[str, float]:
    """The simulator's free parameters from a devnet run's diagnosis: the one-way message
    cost (half the deliver phase left after the run and fetch), the block's way to the
    nodes (the lock phase less half a block and the transaction's message), the daemon's
    own warm run time (its log: the sandbox run with the daemon's thread hand-off), a
    model's first fetch (its log)."""
    messages = diagnosis["deliver_less_run_p50_ms (award + result messages)"]
    lock = diagnosis["lock_less_half_block_p50_ms (tx in + block back)"]
    latency = max(1.0, round((messages or 2.0) / 2, 1))
    return {
        "latency_ms": latency,
        "block_delay_ms": max(0.0, round((lock or latency) - latency, 1)),
        "run_ms": diagnosis["run_warm_p50_ms"] or measured["run_ms"],
        "model_fetch_ms": diagnosis["fetch_p50_ms (first fetch of the model)"] or 0.0,
    }


def scenario_for(
    base: simulations.Scenario,
    redundancy: int,
    args: argparse.Namespace,
    measured: dict[str, Any],
    fitted: dict[str, float] | None = None,
) -> simulations.Scenario:
    """The calibration scenario with this run's redundancy and arrivals (its costs as the
    file has them); with ``fitted``, the sandbox start-ups measured here and the message
    latency, block delay, run time and model fetch fitted to the devnet instead."""
    update: dict[str, Any] = {
        "redundancy": redundancy,
        "rate_per_s": args.rate,
        "max_jobs": args.jobs,
        "model_mb": (measured["model_mb"],) * 2,
        "input_kb": (measured["input_kb"],) * 2,
    }
    if fitted:
        update |= {
            "run_ms": fitted["run_ms"],
            "model_fetch_ms": fitted["model_fetch_ms"],
            "startup_ms": measured["startup_ms"],
            "worker_start_ms": measured["worker_start_ms"],
        }
    jobs = base.jobs.model_copy(update=update)
    network = base.network
    if fitted:
        network = network.model_copy(
            update={
                "latency_ms": ((fitted["latency_ms"],),),
                "block_delay_ms": fitted["block_delay_ms"],
            }
        )
    nodes = base.nodes.model_copy(update={"providers": args.contributors})
    duration = args.jobs / args.rate * 4 + base.drain_s + 60
    return base.model_copy(
        update={
            "jobs": jobs,
            "nodes": nodes,
            "network": network,
            "duration_s": duration,
            "name": "calibration",
        }
    )


def side_by_side(
    records: list[dict[str, Any]], sc: simulations.Scenario, seed: int, out: Path, title: str
) -> dict[str, Any]:
    """Run ``sc`` in the simulator (output in ``out``), compare with the devnet's
    records, print the table; returns the comparison."""
    summary = simulations.run(sc, seed=seed, out=out)
    real = calibration.from_api_records(records)
    sim = calibration.from_jobs_csv(out / "jobs.csv")
    result = calibration.compare(real, sim)
    result["sim_trace_hash"] = summary.trace_hash
    print()
    print(calibration.table(result, title))
    return result


def _p50s(result: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {"devnet": ph["real"]["p50"], "sim": ph["sim"]["p50"], "ratio": ph["ratio"]["p50"]}
        for name, ph in result["phases"].items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=40, help="jobs per redundancy")
    parser.add_argument("--rate", type=float, default=0.5, help="arrivals a second")
    parser.add_argument("--redundancy", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--contributors", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=20, help="sandbox runs measured")
    parser.add_argument("--out", type=Path, help="keep records and simulator outputs here")
    parser.add_argument("--devnet-from", type=Path, help="devnet records of an earlier run")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="aimx-calibrate-"))
    out.mkdir(parents=True, exist_ok=True)
    base = simulations.load_scenario(SCENARIO)
    path, inputs = tiny_model_and_inputs()
    source = args.devnet_from or out
    if args.devnet_from is not None:
        measured = json.loads((source / "measured.json").read_text())
    else:
        print("measuring the tiny model in the sandbox ...", flush=True)
        measured = measure_sandbox(args.repeat)
        measured["model_mb"] = path.stat().st_size / 1e6
        measured["input_kb"] = sum(a.nbytes for a in inputs.values()) / 1e3
        (out / "measured.json").write_text(json.dumps(measured) + "\n")
        for r in args.redundancy:
            print(f"redundancy {r}: devnet, {args.jobs} jobs at {args.rate}/s ...", flush=True)
            sc = scenario_for(base, r, args, measured)
            with tempfile.TemporaryDirectory(prefix="aimx-calibrate-devnet-") as tmp:
                records, runs = run_devnet(Path(tmp), r, args, sc)
            body = {"records": records, "runs": runs}
            (out / f"devnet-r{r}.json").write_text(json.dumps(body) + "\n")
    print(f"measured here: {measured}", flush=True)
    devnet = {r: json.loads((source / f"devnet-r{r}.json").read_text()) for r in args.redundancy}
    diagnoses = {}
    for r in args.redundancy:
        real = calibration.from_api_records(devnet[r]["records"])
        diagnoses[r] = diagnose(real, devnet[r]["runs"], scenario_for(base, r, args, measured))
    first = args.redundancy[0]
    fitted = fit(diagnoses[first], measured)
    print(f"fitted to the devnet at redundancy {first}: {fitted}", flush=True)
    for r in args.redundancy:
        records = devnet[r]["records"]
        head = f"redundancy {r}, {args.jobs} jobs at {args.rate}/s"
        plain = side_by_side(
            records,
            scenario_for(base, r, args, measured),
            args.seed,
            out / f"sim-r{r}",
            f"{head}: the scenario file's values",
        )
        tuned = side_by_side(
            records,
            scenario_for(base, r, args, measured, fitted),
            args.seed,
            out / f"sim-r{r}-fitted",
            f"{head}: fitted to redundancy {first}" + (" (held out)" if r != first else ""),
        )
        print(f"  devnet at redundancy {r}:")
        for key, value in diagnoses[r].items():
            print(f"    {key}: {value}")
        line = {
            "bench": "calibrate",
            "redundancy": r,
            "rate_per_s": args.rate,
            "jobs": tuned["jobs"],
            "phases_p50_ms": _p50s(plain),
            "flagged": plain["flagged"],
            "fitted_phases_p50_ms": _p50s(tuned),
            "fitted_flagged": tuned["flagged"],
            "measured": measured,
            "fitted": fitted,
            "devnet_diagnosis": diagnoses[r],
            "sim_trace_hash": tuned["sim_trace_hash"],
        }
        print(json.dumps(line), flush=True)
    print(f"\nrecords and simulator outputs in {out}")


if __name__ == "__main__":
    main()
