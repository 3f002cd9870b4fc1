"""One phase of the chaos suite: a job stream, one fault, the settle time, the checks."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from ...devnet import DevNode
from ._faults import ChaosError, Partition, by_name, inject
from ._jobs import JobStream, wait_closed
from ._judge import PhaseResult, check_network


def run_fault(
    nodes: list[DevNode],
    fault: str,
    snapshots: Path,
    *,
    duration_s: float,
    threads: int = 2,
    deadline_s: float = 10.0,
    down_s: float = 2.0,
    stop_s: float = 8.0,
    open_escrows: int = 20,
    block_interval_ms: int = 200,
    say: Callable[[str], object] = lambda message: None,
    partition: Partition | None = None,
) -> PhaseResult:
    """One phase: a job stream, ``fault`` a quarter into ``duration_s``, the stream until
    ``duration_s`` has passed and a job was verified after the fault, then a settle time
    (every job done and its escrow closed: at most its expiry) and :func:`check_network`."""
    workspace = by_name(nodes, "workspace")
    stream = JobStream(workspace, threads=threads, deadline_s=deadline_s).start()
    start = time.monotonic()
    time.sleep(duration_s / 4)
    say(f"{fault}: injecting")
    problem = ""
    try:
        fault_end = inject(nodes, fault, down_s=down_s, stop_s=stop_s, partition=partition)
    except ChaosError as exc:
        problem, fault_end = str(exc), time.monotonic()
    say(f"{fault}: over after {fault_end - start - duration_s / 4:.1f} s")
    time.sleep(max(0.0, start + duration_s - time.monotonic()))
    # and on until a job is verified after the fault (the recovery), at most a deadline more
    until = time.monotonic() + deadline_s + 30.0
    while time.monotonic() < until and not stream.verified_since(fault_end):
        time.sleep(0.2)
    stream.stop(timeout_s=deadline_s + 35.0)
    jobs = stream.snapshot()
    # a failed job's escrow is refunded at its expiry: the deadline, the claim window and
    # the margins (node/daemon/submit.py), and a few blocks for the refund to land
    expiry_s = deadline_s + (12 + 5 + open_escrows) * block_interval_ms / 1000
    margin_ms = (12 + 5 + open_escrows) * block_interval_ms
    wait_closed(workspace, jobs, timeout_s=expiry_s + 20.0, past_deadline_ms=margin_ms)
    lost = [r.submitted_at for r in jobs if r.status.get("status") == "unknown"]
    if lost:  # records gone with the workspace: their escrows close by expiry at the latest
        time.sleep(max(0.0, max(lost) + expiry_s - time.monotonic()))
    if all(r.status.get("closed") or r.status.get("status") == "failed" for r in jobs):
        time.sleep(5 * block_interval_ms / 1000)  # the last blocks reach every node
    else:  # a refund may land up to the margin past its expiry
        time.sleep(open_escrows * block_interval_ms / 1000 + 1.0)
    result = PhaseResult(fault, refused=sum(stream.refused.values()))
    if problem:
        result.problems.append(problem)
    say(f"{fault}: {len(jobs)} jobs; checking")
    return check_network(
        result,
        nodes,
        snapshots / fault,
        open_escrows=open_escrows,
        jobs=jobs,
        fault_end=fault_end,
    )
