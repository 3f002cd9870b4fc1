"""Soak: each daemon's memory under a steady job stream, per 1,000 jobs.

A devnet (separate processes, py-libp2p on loopback) of a coordinator, a workspace and
``--contributors`` contributors runs jobs of the sandbox's tiny ONNX model, ``--in-flight``
at a time, for ``--duration`` seconds. Every ``--sample-s`` seconds it reads each daemon's
resident memory (``/proc/<pid>/status``: VmRSS; the daemon only, not its sandbox workers),
open file descriptors and threads, and the number of jobs finished so far.

The figure is each daemon's RSS slope in KB per 1,000 jobs (least squares over the
samples), after warm-up: the first ``--warmup-s`` seconds fill what is bounded on
purpose (the recent blocks a replica keeps, the job records the API keeps, closed escrows
within their retention). The baseline, measured in the same run, is the same slope over
the warm-up part; a flat daemon shows a steady slope far below it and under the target
(50 KB per 1,000 jobs).

Warm-up takes minutes: the daemons' RSS still settles (SQLite's page caches, the
allocator's arenas, the bounded caches filling) for 10-15 minutes under load, so the
defaults are a 30-minute run measured after 15; a shorter warm-up reads that settling as
growth. RSS also follows the rate of work (the allocator's high-water mark), so a slope
needs a steady rate: the table gives each window's rate.

The table's "at steady rate" column is the slope with the part that follows the rate of
work (over the minute before each sample) taken out: a daemon's live set grows with the
rate (jobs in flight, closed escrows kept for their retention, seen messages), so a rate
that drifts during the window reads as growth in the plain slope.

``--arena-max-contributors K`` runs the last K contributors with glibc's
``MALLOC_ARENA_MAX`` (``--arena-max``, 2) for a side-by-side in one run.
``--tracemalloc DIR`` has each contributor write the places whose Python allocations grew
most since warm-up (``bench/memtrace``; slower, so its rates are not the plain run's).
``--samples-out`` keeps every sample as JSON and ``--from-samples`` prints the figures of
such a file again (another ``--warmup-s``, say) without a run; ``--no-verify`` skips the
ledgers' check at the end (minutes on a long chain).

Usage: ``python bench/soak.py [--duration 1800] [--warmup-s 900] [--in-flight 8]``.
Prints a table, then one JSON line per daemon.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from node.api import Client  # noqa: E402
from node.devnet import (  # noqa: E402
    DAEMON_COMMAND,
    running_devnet,
    tiny_model_and_inputs,
    verify_ledgers,
    wait_ready,
)

BLOCK_MS = 100
TARGET_KB_PER_1000 = 50.0


def proc_figures(pid: int) -> tuple[int, int, int]:
    """(RSS in KB, open fds, threads) of a process (0s if it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        rss = int(fields["VmRSS"].split()[0])
        threads = int(fields["Threads"])
        fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    except (OSError, KeyError, ValueError):
        return 0, 0, 0
    return rss, fds, threads


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 with fewer than two distinct x)."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / var


def slope_at_steady_rate(points: list[tuple[float, float, float]]) -> float:
    """Least-squares coefficient ``b`` of ``y ~ a + b x + c z`` over ``(x, z, y)`` points:
    the slope of y over x with the part that follows z taken out (0 with too few points,
    or when x and z move together). Here x is the jobs done, z the rate of work and y the
    RSS: the live set of a daemon follows the rate (jobs in flight, escrows kept for
    their retention, seen messages), so a rate that drifts during a window reads as growth
    in a plain slope."""
    n = len(points)
    if n < 3:
        return 0.0
    mx = sum(p[0] for p in points) / n
    mz = sum(p[1] for p in points) / n
    my = sum(p[2] for p in points) / n
    sxx = sum((x - mx) ** 2 for x, _, _ in points)
    szz = sum((z - mz) ** 2 for _, z, _ in points)
    sxz = sum((x - mx) * (z - mz) for x, z, _ in points)
    sxy = sum((x - mx) * (y - my) for x, _, y in points)
    szy = sum((z - mz) * (y - my) for _, z, y in points)
    det = sxx * szz - sxz * sxz
    if sxx == 0 or det <= 1e-9 * sxx * szz:
        return 0.0
    return (sxy * szz - szy * sxz) / det


#: The rate of work at a sample is taken over this long before it.
RATE_WINDOW_S = 60.0


def rates(samples: list[dict[str, Any]]) -> list[float]:
    """Each sample's rate of work (jobs/s) over the ``RATE_WINDOW_S`` before it (over what
    there is, at the start)."""
    out = []
    for i, s in enumerate(samples):
        j = i
        while j > 0 and s["t"] - samples[j - 1]["t"] <= RATE_WINDOW_S:
            j -= 1
        first = samples[j]
        span = s["t"] - first["t"]
        out.append((s["jobs"] - first["jobs"]) / span if span > 0 else 0.0)
    return out


def contributor_command(args: argparse.Namespace, i: int) -> tuple[str, ...]:
    """Contributor ``i``'s daemon: the last ``--arena-max-contributors`` run with glibc's
    ``MALLOC_ARENA_MAX``; with ``--tracemalloc`` each writes its allocation growth."""
    env: list[str] = []
    if i >= args.contributors - args.arena_max_contributors:
        env.append(f"MALLOC_ARENA_MAX={args.arena_max}")
    if args.memstats is not None:
        args.memstats.mkdir(parents=True, exist_ok=True)
        env += [
            f"PYTHONPATH={_HERE / 'memtrace'}",
            f"AIMX_MEMSTATS_OUT={args.memstats.resolve() / f'contributor-{i + 1}.jsonl'}",
        ]
    if args.tracemalloc is not None:
        args.tracemalloc.mkdir(parents=True, exist_ok=True)
        env += [
            f"PYTHONPATH={_HERE / 'memtrace'}",
            f"AIMX_TRACEMALLOC_OUT={args.tracemalloc.resolve() / f'contributor-{i + 1}.txt'}",
            f"AIMX_TRACEMALLOC_START_S={args.warmup_s}",
        ]
    return ("env", *env, *DAEMON_COMMAND) if env else DAEMON_COMMAND


def run(args: argparse.Namespace) -> dict[str, Any]:
    path, inputs = tiny_model_and_inputs()
    done = 0
    failed: dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="aimx-soak-") as tmp:
        if args.keep is not None:
            tmp = str(args.keep)
        workspace_extra = (
            "[requester]\nbid_window_ms = 500\ndeadline_ms = 60000\n"
            f"job_records = {args.job_records}\n"
        )
        with running_devnet(
            Path(tmp),
            args.contributors,
            workspace_extra=workspace_extra,
            block_interval_ms=BLOCK_MS,
            contributor_extra=lambda i: "max_concurrency = 8\nwarm_workers = 2\n",
            contributor_command=lambda i: contributor_command(args, i),
        ) as nodes:
            wait_ready(nodes)
            ws = next(n for n in nodes if n.name == "workspace")

            def worker() -> None:
                nonlocal done
                with Client.for_data_dir(ws.data_dir) as client:
                    while not stop.is_set():
                        job_id = client.submit(path, inputs, redundancy=args.redundancy)
                        status = client.wait(job_id, timeout_s=120)
                        with lock:
                            done += 1
                            if status["status"] != "verified":
                                why = re.sub(r"\d+", "N", status.get("reason", ""))
                                key = f"{status['status']}: {why}"[:120]
                                failed[key] = failed.get(key, 0) + 1

            threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.in_flight)]
            start = time.monotonic()
            for t in threads:
                t.start()
            while time.monotonic() - start < args.duration:
                with lock:
                    jobs = done
                sample: dict[str, Any] = {
                    "t": time.monotonic() - start,
                    "wall": time.time(),
                    "jobs": jobs,
                }
                for n in nodes:
                    assert n.proc is not None
                    sample[n.name] = proc_figures(n.proc.pid)
                samples.append(sample)
                print(
                    f"{sample['t']:6.0f} s {jobs:6d} jobs  "
                    + "  ".join(f"{n.name} {sample[n.name][0] / 1024:.1f} MB" for n in nodes),
                    flush=True,
                )
                time.sleep(args.sample_s)
            stop.set()
            for t in threads:
                t.join(timeout=130)
            alive = {n.name: n.alive() for n in nodes}
            names = [n.name for n in nodes]
        # stopped now; a long chain
        ledgers = verify_ledgers(nodes, timeout_s=1800) if args.verify else {}
    return {
        "samples": samples,
        "names": names,
        "done": done,
        "failed": failed,
        "alive": alive,
        "ledgers": ledgers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=1800.0)
    parser.add_argument("--warmup-s", type=float, default=900.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--contributors", type=int, default=3)
    parser.add_argument("--redundancy", type=int, default=1)
    parser.add_argument(
        "--job-records", type=int, default=2000, help="job records the workspace's API keeps"
    )
    parser.add_argument(
        "--arena-max-contributors",
        type=int,
        default=0,
        help="the last K contributors run with MALLOC_ARENA_MAX (glibc) set, the others "
        "with the default: a side-by-side of the allocator's arenas in one run",
    )
    parser.add_argument("--arena-max", type=int, default=2)
    parser.add_argument(
        "--tracemalloc",
        type=Path,
        help="trace the contributors' Python allocations: each writes DIR/contributor-N.txt, "
        "the places that grew most since warm-up (bench/memtrace), every 2 minutes",
    )
    parser.add_argument(
        "--memstats",
        type=Path,
        help="each contributor appends, every minute, its RSS beside SQLite's memory, "
        "malloc's bytes in use and free, and Python's blocks to DIR/contributor-N.jsonl "
        "(bench/memtrace): where RSS growth lives, without tracing's own cost",
    )
    parser.add_argument("--keep", type=Path, help="keep the devnet's data directories here")
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip 'aimx ledger verify' of every node at the end (minutes on a long chain)",
    )
    parser.add_argument(
        "--samples-out", type=Path, help="write every sample (time, jobs, each daemon) as JSON"
    )
    parser.add_argument(
        "--from-samples",
        type=Path,
        help="no run: print the figures of the samples a run wrote with --samples-out",
    )
    args = parser.parse_args()
    if args.from_samples is not None:
        kept = json.loads(args.from_samples.read_text())
        out = {"done": kept["samples"][-1]["jobs"], "failed": {}, "alive": {}, "ledgers": {}}
        out.update(kept)
    else:
        out = run(args)
    samples = out["samples"]
    if args.samples_out is not None:
        args.samples_out.write_text(json.dumps({"names": out["names"], "samples": samples}))
    report(out, args.warmup_s)


def report(out: dict[str, Any], warmup_s: float) -> None:
    """The table and one JSON line per daemon."""
    samples = out["samples"]
    at_rate = rates(samples)
    warm = [s for s in samples if s["t"] < warmup_s]
    steady = [s for s in samples if s["t"] >= warmup_s]
    steady_rates = at_rate[len(warm) :]
    for name, body in out["ledgers"].items():
        if not body.get("ok"):
            print(f"ledger of {name} does not verify: {body.get('error', '')}")
    print(f"\n{out['done']} jobs; not verified: {out['failed'] or 'none'}; alive: {out['alive']}")
    for label, part, part_rates in (
        ("warm-up", warm, at_rate[: len(warm)]),
        ("steady", steady, steady_rates),
    ):
        if len(part) > 1:
            print(
                f"{label}: jobs {part[0]['jobs']}-{part[-1]['jobs']}, "
                f"{(part[-1]['jobs'] - part[0]['jobs']) / (part[-1]['t'] - part[0]['t']):.1f} "
                f"jobs/s (over {RATE_WINDOW_S:.0f} s: "
                f"{min(part_rates):.1f}-{max(part_rates):.1f})"
            )
    header = f"{'daemon':16} {'RSS MB':>8} {'warm-up KB/1k':>14} {'steady KB/1k':>13}"
    print(f"{header} {'at steady rate':>14} {'fds':>5} {'thr':>4}")
    for name in out["names"]:
        warm_slope = slope([(s["jobs"], s[name][0]) for s in warm]) * 1000
        steady_slope = slope([(s["jobs"], s[name][0]) for s in steady]) * 1000
        held = (
            slope_at_steady_rate(
                [(s["jobs"], r, s[name][0]) for s, r in zip(steady, steady_rates, strict=True)]
            )
            * 1000
        )
        last = samples[-1][name]
        print(
            f"{name:16} {last[0] / 1024:8.1f} {warm_slope:14.1f} {steady_slope:13.1f} "
            f"{held:14.1f} {last[1]:5d} {last[2]:4d}"
        )
        fds = [s[name][1] for s in steady]
        print(
            json.dumps(
                {
                    "bench": "soak",
                    "daemon": name,
                    "jobs": out["done"],
                    "rss_kb": last[0],
                    "kb_per_1000_jobs_steady": round(steady_slope, 1),
                    "kb_per_1000_jobs_at_steady_rate": round(held, 1),
                    "kb_per_1000_jobs_warmup": round(warm_slope, 1),
                    "target_kb_per_1000_jobs": TARGET_KB_PER_1000,
                    "fds_min_max": [min(fds, default=0), max(fds, default=0)],
                    "ledger_ok": (
                        bool(out["ledgers"].get(name, {}).get("ok")) if out["ledgers"] else None
                    ),
                }
            )
        )


if __name__ == "__main__":
    main()
