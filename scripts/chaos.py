"""Chaos run (issue 15): a devnet of processes under a steady job stream, one fault at a
time, and after each the checks of ``node/testing/chaos/`` (ledgers verify, heights and
roots agree, credits conserved, no escrow open past expiry, nobody paid twice, every job
verified or failed with a reason and refunded).

Faults: kill -9 then restart of a contributor, the workspace, the coordinator (same
address); SIGSTOP of a contributor and of the coordinator past the timeouts, then SIGCONT;
a full disk under a contributor's and the workspace's ledger (a 64 MiB tmpfs mounted at
their ledger directories: root only, else skipped with the reason) for as long.

Usage::

    python scripts/chaos.py [--duration 60] [--faults kill-contributor,stop-coordinator]
    python scripts/chaos.py --short      # what CI runs: a few jobs per fault

Prints one line per step, then the table; exits 1 if any check failed (the problems are
listed under the table), and writes the results as JSON with ``--json PATH``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from node.devnet import running_devnet, wait_ready  # noqa: E402
from node.testing.chaos import (  # noqa: E402
    DISK_FAULTS,
    FAULTS,
    NETNS_FAULTS,
    ChaosSkip,
    PhaseResult,
    ledger_tmpfs,
    run_fault,
    table,
)

BLOCK_MS = 200
WORKSPACE_EXTRA = "[requester]\nbid_window_ms = 300\n"
CONTRIBUTOR_EXTRA = "max_concurrency = 4\nwarm_workers = 1\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of jobs per fault")
    parser.add_argument(  # a partition needs namespaces: tests/netns/test_partition.py
        "--faults",
        default=",".join(f for f in FAULTS if f not in NETNS_FAULTS),
        help="comma-separated, in order",
    )
    parser.add_argument("--threads", type=int, default=3, help="jobs in flight")
    parser.add_argument("--deadline-s", type=float, default=12.0, help="each job's deadline")
    parser.add_argument("--down-s", type=float, default=3.0, help="a killed node's outage")
    parser.add_argument("--stop-s", type=float, default=10.0, help="how long SIGSTOP lasts")
    parser.add_argument("--open-escrows", type=int, default=20, metavar="BLOCKS")
    parser.add_argument("--contributors", type=int, default=3)
    parser.add_argument("--short", action="store_true", help="8 s per fault, 2 jobs in flight")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--keep", type=Path, help="run the devnet here and keep it")
    args = parser.parse_args()
    if args.short:
        args.duration, args.threads, args.stop_s, args.down_s = 8.0, 2, 6.0, 2.0
    faults = [f for f in args.faults.split(",") if f]
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        parser.error(f"unknown faults {unknown}; known: {', '.join(FAULTS)}")

    results: list[PhaseResult] = []
    began = time.monotonic()

    def say(message: str) -> None:
        print(f"{time.monotonic() - began:7.1f} s  {message}", flush=True)

    with tempfile.TemporaryDirectory(prefix="aimx-chaos-") as tmp, contextlib.ExitStack() as mounts:
        root = args.keep or Path(tmp)
        for fault in [f for f in faults if f in DISK_FAULTS]:
            try:  # the node's ledger on a small tmpfs, mounted before it starts
                mounts.enter_context(ledger_tmpfs(root / "devnet" / FAULTS[fault][1]))
            except ChaosSkip as exc:
                say(f"{fault}: skipped: {exc}")
                faults.remove(fault)
        with running_devnet(
            root / "devnet",
            args.contributors,
            say=say,
            workspace_extra=WORKSPACE_EXTRA,
            contributor_extra=lambda i: CONTRIBUTOR_EXTRA,
            block_interval_ms=BLOCK_MS,
        ) as nodes:
            wait_ready(nodes)
            say("devnet ready")
            for fault in faults:
                result = run_fault(
                    nodes,
                    fault,
                    root / "snapshots",
                    duration_s=args.duration,
                    threads=args.threads,
                    deadline_s=args.deadline_s,
                    down_s=args.down_s,
                    stop_s=args.stop_s,
                    open_escrows=args.open_escrows,
                    block_interval_ms=BLOCK_MS,
                    say=say,
                )
                results.append(result)
                say(
                    f"{fault}: {'passed' if result.passed else 'FAILED'} "
                    f"(ok {result.ok}, failed {result.failed}, stuck {result.stuck})"
                )
    print()
    print(table(results))
    for r in results:
        if r.reasons:
            print(f"{r.fault}: failed jobs' reasons: {r.reasons}")
        for problem in r.problems:
            print(f"{r.fault}: PROBLEM {problem}")
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=1))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
