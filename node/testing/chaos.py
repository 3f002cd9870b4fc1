"""Chaos on a devnet of processes: one fault at a time under a steady job stream, then the
checks that say nothing was lost (issue 15).

``scripts/chaos.py`` (the long run) and ``tests/chaos/`` (the short one in CI) share this
module. A *fault* is one of :data:`FAULTS`: ``kill-<role>`` (SIGKILL, a short outage, then
:func:`node.devnet.restart` on the same data directory; a coordinator comes back on the same
address; ``move-coordinator``: on another port, the others still knowing only the old
one), ``stop-<role>`` (SIGSTOP for longer than the scheduler's heartbeat timeout and
the transactions' lifetime, then SIGCONT), ``full-<role>`` (the node's ledger directory
is a small tmpfs, :func:`ledger_tmpfs`, mounted before it starts; a file fills it for as
long as a SIGSTOP lasts, then goes) or ``partition-contributor`` (the link of the
contributor's network namespace is cut as long, then restored: ``tests/netns/``). While
it happens, :class:`JobStream` submits jobs to the workspace (redundancy 1 and 2 in turn)
from a few threads.

After the fault and a settle time, :func:`check_network` snapshots every node's ledger (a
consistent SQLite backup of the live database) and checks, on the snapshots:

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
  with a SIGKILL) is judged by its escrow alone.

The result is one :class:`PhaseResult` per fault, a row of :func:`table`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ledger
import protocol

from ..api import ApiError, Client
from ..cli.node import LISTEN_FILE
from ..devnet import DevNode, restart, tiny_model_and_inputs, verify_data_dirs
from ..ledger._service import ledger_db_path

#: Every fault the suite knows: what it does to which node.
FAULTS: dict[str, tuple[str, str]] = {
    "kill-contributor": ("kill", "contributor-1"),
    "kill-workspace": ("kill", "workspace"),
    "kill-coordinator": ("kill", "coordinator"),
    "stop-contributor": ("stop", "contributor-1"),
    "stop-coordinator": ("stop", "coordinator"),
    "full-contributor": ("full", "contributor-1"),
    "full-workspace": ("full", "workspace"),
    # its network namespace's link cut for as long as a SIGSTOP lasts (tests/netns/)
    "partition-contributor": ("partition", "contributor-1"),
    # last: the others may never find it again
    "move-coordinator": ("move", "coordinator"),
}
#: The faults that need the node's ledger on a small tmpfs (:func:`ledger_tmpfs`, root).
DISK_FAULTS = tuple(f for f, (action, _) in FAULTS.items() if action == "full")
#: The faults that need the node in a network namespace of its own (tests/netns/, root).
NETNS_FAULTS = tuple(f for f, (action, _) in FAULTS.items() if action == "partition")
#: The name of the file that fills a ledger's tmpfs.
FILLER = "chaos-filler"


class ChaosError(Exception):
    """A fault did not take effect as it should (the message says how)."""


class ChaosSkip(Exception):
    """A fault cannot be made here (not root, no tmpfs): the reason is the message."""


#: Cuts a node off the network for the duration of the ``with`` block: a partition
#: (``node.testing.netns``: the link of the node's namespace down, then up).
Partition = Callable[[DevNode], contextlib.AbstractContextManager[None]]


@contextlib.contextmanager
def ledger_tmpfs(data_dir: Path, size: str = "64m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at the ledger directory of the node that will run on
    ``data_dir`` (before it starts), unmounted on the way out. Raises :class:`ChaosSkip`
    unless root and ``mount`` works."""
    if os.geteuid() != 0:
        raise ChaosSkip("mounting a tmpfs needs root")
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    where = ledger_db_path(data_dir).parent
    where.mkdir(mode=0o700, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ChaosSkip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(path: Path) -> None:
    """Write ``path`` until its file system has no byte left (bounded)."""
    with open(path, "wb", buffering=0) as f, contextlib.suppress(OSError):
        for _ in range(1 << 16):  # 256 MiB at most: more than the tmpfs holds
            f.write(b"\0" * 4096)


def by_name(nodes: list[DevNode], name: str) -> DevNode:
    return next(n for n in nodes if n.name == name)


# --- the job stream ------------------------------------------------------------------


@dataclass
class JobRun:
    """One job the stream submitted: its id, when, and what the workspace said last."""

    job_id: str
    redundancy: int
    submitted_at: float
    done_at: float | None = None
    status: dict[str, Any] = field(default_factory=dict)


class JobStream:
    """``threads`` threads, each submitting a job to the workspace and waiting for it to be
    done, again and again, until :meth:`stop`. A submission the workspace refuses or cannot
    take (it is down) is counted and retried a little later, with a new client (a restarted
    workspace has a new API address)."""

    def __init__(self, workspace: DevNode, *, threads: int = 2, deadline_s: float = 10.0) -> None:
        self.workspace = workspace
        self.deadline_s = deadline_s
        self.jobs: list[JobRun] = []
        self.refused: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._count = 0
        self._model, self._inputs = tiny_model_and_inputs()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self) -> JobStream:
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop submitting; wait (bounded) for the threads' current jobs to be done."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))

    def _client(self) -> Client | None:
        try:
            return self.workspace.client(timeout_s=10.0)
        except Exception:  # node.json or the token not there yet (a restart)
            return None

    def _refused(self, why: str) -> None:
        with self._lock:
            key = why[:100]
            self.refused[key] = self.refused.get(key, 0) + 1

    def _run(self) -> None:
        client: Client | None = None
        while not self._stop.is_set():
            if client is None:
                client = self._client()
                if client is None:
                    self._stop.wait(0.2)
                    continue
            with self._lock:
                self._count += 1
                redundancy = 1 + self._count % 2
            try:
                job_id = client.submit(
                    self._model, self._inputs, redundancy=redundancy, deadline_s=self.deadline_s
                )
            except ApiError as exc:
                self._refused(str(exc))
                client.close()
                client = None
                self._stop.wait(0.2)
                continue
            run = JobRun(job_id, redundancy, time.monotonic())
            with self._lock:
                self.jobs.append(run)
            client = self._wait(client, run)

    def _wait(self, client: Client | None, run: JobRun) -> Client | None:
        """Until ``run`` is done (or long past its deadline); across workspace restarts."""
        give_up = run.submitted_at + self.deadline_s + 30.0
        while time.monotonic() < give_up:
            if client is None:
                client = self._client()
                if client is None:
                    time.sleep(0.2)
                    continue
            try:
                status = client.job(run.job_id, wait_s=1.0)
            except ApiError as exc:
                if " 404 " in str(exc):  # the workspace lost the record (SIGKILL)
                    run.status = {"status": "unknown", "reason": "record lost"}
                    return client
                client.close()
                client = None
                time.sleep(0.2)
                continue
            run.status = status
            if status.get("done"):
                run.done_at = time.monotonic()
                return client
        return client

    def verified_since(self, at: float) -> bool:
        """Whether a job was seen verified at ``at`` (monotonic) or later."""
        with self._lock:
            return any(
                r.done_at is not None and r.done_at >= at and r.status.get("status") == "verified"
                for r in self.jobs
            )

    def snapshot(self) -> list[JobRun]:
        with self._lock:
            return list(self.jobs)


# --- faults --------------------------------------------------------------------------


def sigkill(node: DevNode) -> None:
    assert node.proc is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(node.proc.pid, signal.SIGKILL)
    node.proc.wait(10)


def wait_fault(node: DevNode, *, set_: bool, timeout_s: float) -> bool:
    """Until ``node``'s ``/api/status`` reports a fault (``set_``) or none; bounded."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception), node.client() as c:
            if (c.status().get("fault") is not None) == set_:
                return True
        time.sleep(0.2)
    return False


def inject(
    nodes: list[DevNode],
    fault: str,
    *,
    down_s: float,
    stop_s: float,
    fault_timeout_s: float = 120.0,
    partition: Partition | None = None,
) -> float:
    """Do ``fault`` (a key of :data:`FAULTS`) and undo it; returns when it ended (monotonic):
    the restarted node's ``node.json`` is there, SIGCONT was sent, or a full disk's fault
    cleared. Raises :class:`ChaosError` if a full disk's fault never showed or never
    cleared. A partition lasts ``stop_s`` and needs ``partition`` (else
    :class:`ChaosSkip`)."""
    action, name = FAULTS[fault]
    node = by_name(nodes, name)
    assert node.proc is not None
    if action == "partition":
        if partition is None:
            raise ChaosSkip(
                f"{fault} needs {name} in a network namespace of its own (node.testing.netns, root)"
            )
        with partition(node):
            time.sleep(stop_s)
        return time.monotonic()
    if action in ("kill", "move"):
        sigkill(node)
        time.sleep(down_s)
        if action == "move":  # it forgets the port it had: it comes back on another one
            (node.data_dir / LISTEN_FILE).unlink(missing_ok=True)
        restart(node)
        return time.monotonic()
    if action == "full":
        # SQLite reuses its WAL's pages: the first failed write may come a while after the
        # disk filled up. The fault starts when the node reports it, and lasts ``stop_s``.
        filler = ledger_db_path(node.data_dir).parent / FILLER
        try:
            fill(filler)
            if not wait_fault(node, set_=True, timeout_s=fault_timeout_s):
                raise ChaosError(
                    f"{name} reported no fault {fault_timeout_s:.0f} s into a full disk"
                )
            time.sleep(stop_s)
        finally:
            filler.unlink(missing_ok=True)
        if not wait_fault(node, set_=False, timeout_s=fault_timeout_s):
            raise ChaosError(f"{name}'s fault did not clear once the disk had space again")
        return time.monotonic()
    os.kill(node.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(stop_s)
    finally:
        os.kill(node.proc.pid, signal.SIGCONT)
    return time.monotonic()


# --- the checks ----------------------------------------------------------------------


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


def wait_closed(
    workspace: DevNode, jobs: list[JobRun], timeout_s: float, past_deadline_ms: int
) -> None:
    """Until every job the workspace still knows is done and its escrow closed (bounded).
    A failed job whose lock never landed has no escrow and never shows ``closed``: one that
    failed is waited for until ``past_deadline_ms`` past its deadline (its expiry and the
    margin), and the chain says later whether it was locked."""
    deadline = time.monotonic() + timeout_s
    for run in jobs:
        while time.monotonic() < deadline:
            try:
                with workspace.client(timeout_s=10.0) as c:
                    status = c.job(
                        run.job_id, wait_s=min(1.0, deadline - time.monotonic()), until="closed"
                    )
            except ApiError as exc:
                if " 404 " in str(exc):
                    run.status = run.status or {"status": "unknown", "reason": "record lost"}
                    break
                time.sleep(0.2)
                continue
            except Exception:  # node.json not back yet (a restart)
                time.sleep(0.2)
                continue
            if status.get("done") and run.done_at is None:
                run.done_at = time.monotonic()
            run.status = status
            if status.get("closed"):
                break
            over_ms = int(status.get("deadline_ms", 0)) + past_deadline_ms
            if status.get("status") == "failed" and time.time() * 1000 > over_ms:
                break


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
