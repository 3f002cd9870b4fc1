"""The checks after a fault: what the nodes' ledgers say, judged on snapshots.

:func:`check_network` snapshots every node's ledger (a consistent SQLite backup of the live
database) and checks, on the snapshots:

- every ledger verifies (``aimx ledger verify --open-escrows N``: signatures, hash links,
  state roots and the invariants after every block, so credits are conserved) and no
  escrow is open more than N blocks past its expiry;
- heights and state roots agree: every node holds the same block at the lowest height any
  of them reached (the block carries its state root);
- no provider is paid twice for one job: the payouts of each job's settle and the claims
  against its escrow, over the whole chain (closed escrows leave the state, the blocks keep
  them);
- every job of the phase is verified, or failed with a reason, and its escrow is closed
  (settled or refunded) on the chain; a job the workspace no longer knows (its records went
  with a SIGKILL) is judged by its escrow alone (:func:`judge_jobs`).

The result is one :class:`PhaseResult` per fault, a row of :func:`table`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ledger
import protocol

from ...devnet import DevNode, verify_data_dirs
from ...ledger._service import ledger_db_path
from ._jobs import JobRun


def snapshot_ledger(node: DevNode, into: Path) -> Path:
    """A consistent copy of ``node``'s live ledger database as a data directory of its own
    (``into/<name>``), for ``aimx ledger verify`` and for reading blocks."""
    data_dir = into / node.name
    target = ledger_db_path(data_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    source = sqlite3.connect(f"file:{ledger_db_path(node.data_dir)}?mode=ro", uri=True)
    try:
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)
        finally:
            copy.close()
    finally:
        source.close()
    return data_dir


def verify_snapshots(data_dirs: dict[str, Path], open_escrows: int) -> dict[str, dict[str, Any]]:
    """``aimx ledger verify --json --open-escrows N`` on each snapshot, all at once."""
    return verify_data_dirs(data_dirs, "--open-escrows", str(open_escrows), timeout_s=300.0)


@dataclass
class Chain:
    """What the blocks of one ledger say about escrows (pruned ones included)."""

    height: int = 0
    #: job id -> (lock height, expiry height)
    locks: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    #: job id -> ("settle" | "refund", height)
    closes: dict[bytes, tuple[str, int]] = field(default_factory=dict)
    #: (job id, provider) -> times paid (settle payouts and claims)
    paid: dict[tuple[bytes, bytes], int] = field(default_factory=dict)


def read_chain(data_dir: Path) -> Chain:
    """Every lock, settle, claim and refund of the ledger in ``data_dir`` (a snapshot)."""
    chain = Chain()
    claimed: set[tuple[bytes, bytes]] = set()
    with ledger.LedgerStore.open(ledger_db_path(data_dir)) as store:
        chain_id = store.genesis.chain_id
        for raw in store.iter_blocks():
            block = ledger.decode_block(raw, store.genesis).message
            chain.height = block.height
            for raw_tx in block.txs:
                vtx = ledger.verify_tx(raw_tx, chain_id)
                p = vtx.payload
                if isinstance(p, ledger.Lock):
                    chain.locks[p.job_id] = (block.height, p.expiry_height)
                elif isinstance(p, ledger.Settle):
                    chain.closes[p.job_id] = ("settle", block.height)
                    for payout in p.payouts:
                        key = (p.job_id, payout.provider)
                        if key in claimed:
                            continue  # the ledger pays a claimed provider no settle payout
                        chain.paid[key] = chain.paid.get(key, 0) + 1
                elif isinstance(p, ledger.Claim):
                    key = (p.job_id, vtx.tx.sender)
                    claimed.add(key)
                    chain.paid[key] = chain.paid.get(key, 0) + 1
                elif isinstance(p, ledger.Refund):
                    chain.closes[p.job_id] = ("refund", block.height)
    return chain


def block_at(data_dir: Path, height: int) -> bytes | None:
    with ledger.LedgerStore.open(ledger_db_path(data_dir)) as store:
        return store.block(height)


@dataclass
class PhaseResult:
    """One fault's row: the jobs, the checks, the recovery."""

    fault: str
    ok: int = 0
    failed: int = 0
    stuck: int = 0
    refused: int = 0
    #: every ledger verified (signatures, roots, invariants: credits conserved)
    conserved: bool = False
    open_past_expiry: int = 0
    heights_agree: bool = False
    paid_twice: int = 0
    recovery_s: float | None = None
    problems: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.problems


def judge_jobs(result: PhaseResult, jobs: Iterable[JobRun], chain: Chain, fault_end: float) -> None:
    """Count the phase's jobs as ok / failed / stuck (:class:`PhaseResult`), and the time
    from the end of the fault to the first job verified after it."""
    firsts: list[float] = []
    for run in jobs:
        job = bytes.fromhex(run.job_id)
        status = run.status.get("status", "pending")
        closed = chain.closes.get(job)
        locked = job in chain.locks
        if status == "verified" and closed is not None:
            result.ok += 1
            if run.done_at is not None and run.done_at >= fault_end:
                firsts.append(run.done_at - fault_end)
        elif status == "unknown" and closed is not None and closed[0] == "settle":
            result.ok += 1  # the record went with the workspace; the chain paid it
        elif status == "unverified" and closed is not None:
            # ended without a verification (results accepted short, or agreeing outputs
            # of newcomers only while probation held): a job that did not verify, closed
            result.failed += 1
            key = ("unverified: " + str(run.status.get("reason") or ""))[:60]
            result.reasons[key] = result.reasons.get(key, 0) + 1
        elif status in ("failed", "unknown") and (closed is not None or not locked):
            result.failed += 1
            reason = str(run.status.get("reason") or "")
            if status == "failed" and not reason:
                result.problems.append(f"job {run.job_id[:12]} failed without a reason")
            key = (reason or status)[:60]
            result.reasons[key] = result.reasons.get(key, 0) + 1
        else:
            result.stuck += 1
            result.problems.append(
                f"job {run.job_id[:12]} stuck: status {status}, escrow "
                f"{'closed by ' + closed[0] if closed else 'open' if locked else 'never locked'}"
            )
    result.recovery_s = min(firsts) if firsts else None
    if result.recovery_s is None:
        result.problems.append("no job was verified after the fault ended")


def check_network(
    result: PhaseResult,
    nodes: list[DevNode],
    snapshots: Path,
    *,
    open_escrows: int,
    jobs: list[JobRun],
    fault_end: float,
) -> PhaseResult:
    """Snapshot every node's ledger and run every check on the snapshots (module doc)."""
    dirs = {n.name: snapshot_ledger(n, snapshots) for n in nodes}
    reports = verify_snapshots(dirs, open_escrows)
    result.conserved = all(r["verified"] for r in reports.values())
    result.open_past_expiry = max(len(r.get("open_past_expiry", [])) for r in reports.values())
    for name, r in reports.items():
        late = r.get("open_past_expiry", [])
        if r["verified"] and late:
            jobs_late = ", ".join(e["job_id"][:12] for e in late[:5])
            result.problems.append(
                f"ledger of {name}: {len(late)} escrows open more than {open_escrows} blocks "
                f"past their expiry at height {r.get('height')} (jobs {jobs_late})"
            )
        elif not r["ok"]:
            result.problems.append(f"ledger of {name}: {r.get('error', '')[-300:]}")
    heights = {name: int(r.get("height", 0)) for name, r in reports.items()}
    common = min(heights.values())
    blocks = {name: block_at(d, common) for name, d in dirs.items()}
    result.heights_agree = common > 0 and len(set(blocks.values())) == 1
    if not result.heights_agree:
        result.problems.append(f"the nodes hold different blocks at height {common}: {heights}")
    chain = read_chain(dirs["coordinator"])
    twice = {k: v for k, v in chain.paid.items() if v > 1}
    result.paid_twice = len(twice)
    for (job, provider), times in twice.items():
        result.problems.append(
            f"provider {protocol.peer_id(provider)} paid {times} times for job {job.hex()[:12]}"
        )
    judge_jobs(result, jobs, chain, fault_end)
    return result


def table(results: list[PhaseResult]) -> str:
    """The chaos table: per fault, jobs ok / failed / stuck, credits conserved, escrows open
    past expiry, heights and roots, providers paid twice, recovery time."""
    head = (
        f"{'fault':18} {'ok':>4} {'failed':>6} {'stuck':>5} {'refused':>7} {'conserved':>9} "
        f"{'open>exp':>8} {'roots':>5} {'paid2x':>6} {'recovery s':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        rec = f"{r.recovery_s:.2f}" if r.recovery_s is not None else "-"
        lines.append(
            f"{r.fault:18} {r.ok:4d} {r.failed:6d} {r.stuck:5d} {r.refused:7d} "
            f"{'yes' if r.conserved else 'NO':>9} {r.open_past_expiry:8d} "
            f"{'agree' if r.heights_agree else 'DIFF':>5} {r.paid_twice:6d} {rec:>10}"
        )
    return "\n".join(lines)
