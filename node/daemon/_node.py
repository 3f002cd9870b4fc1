"""The daemon driver: one :class:`Node` carries out the marketplace machines' effects.

It holds the node's identity, configuration, a :class:`~node.net.Network` (injected:
in-memory for tests, libp2p for real), the ledger (:class:`~node.ledger_service.
LedgerService`: replica always, block producer and faucet on a coordinator), the sandbox,
the scheduler machines (a Requester when the node has the requester role, a Provider when
it is a contributor), a timer wheel and a content store. specs/daemon.md describes it.

Every machine call happens on the trio loop, one at a time; effects with I/O (sends,
transactions, sandbox runs, content fetches) run as tasks in the node's nursery, so a
handler never waits on the network. A peer's bad message is counted and never raised.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.signing
import numpy as np
import trio

import ledger
import protocol
import scheduler
from ledger import tx
from protocol import (
    Advert,
    Award,
    GpuInfo,
    InputRef,
    JobSpec,
    Requirements,
    Result,
    Signed,
    Usage,
    VerificationPolicy,
)
from sandbox import JobRequest, Sandbox, compare_outputs

from ..config import NodeConfig
from ..ledger_service import LedgerService
from ..net import (
    Network,
    NetworkError,
    PeerKey,
    RequestRejected,
    job_class,
    job_topic,
    provider_classes,
)
from ._clock import Clock
from ._codec import (
    Array,
    commitment_of,
    outputs_bytes,
    outputs_from_bytes,
    tensor_bytes,
    tensor_from_bytes,
)
from ._content import ContentStore
from ._errors import JobNotFound, JobSubmitError, RoleMissing
from ._metrics import NodeMetrics
from ._recovery import KeptReceipt, ReceiptStore
from ._timers import Timers
from ._txs import TxQueue, TxRequest

log = logging.getLogger(__name__)

#: Jobs the API remembers (the oldest closed ones are forgotten beyond this).
MAX_JOB_RECORDS = 10_000
#: How often (in blocks) a requester looks for open escrows of its own that it forgot.
ORPHAN_SCAN_BLOCKS = 100

MARKET_PROTOCOL = "/aimx/market/2"
#: At most this many messages answer one market request, of at most this many bytes in all.
MAX_REPLIES = 16
MAX_REPLY_BYTES = 1 << 20
CONTENT_PROTOCOL = "/aimx/content/1"
REPORT_PROTOCOL = "/aimx/report/1"
GENESIS_PROTOCOL = "/aimx/genesis/1"

_PROVIDER_TAGS = frozenset({JobSpec.TAG, Award.TAG, protocol.Receipt.TAG})
_REQUESTER_TAGS = frozenset(
    {protocol.Bid.TAG, protocol.NoBid.TAG, protocol.Heartbeat.TAG, Result.TAG}
)
_ZERO_USAGE = Usage(cpu_ms=0, wall_ms=0, peak_memory_kb=0, gpu_ms=0)
#: A requester's claim window and settle margin (network parameters; specs/marketplace.md).
CLAIM_WINDOW_BLOCKS = 10
SETTLE_MARGIN_BLOCKS = 2
#: Largest content blob served or fetched.
MAX_CONTENT_BYTES = (4 << 20) - 4096
ADVERT_LIFETIME_MS = 3_600_000
PROVIDERS_REFRESH_MS = 30_000
READVERTISE_FIRST_S = 3.0
READVERTISE_EVERY_S = 20.0
#: Re-advertising backs off (doubling) from READVERTISE_EVERY_S to this.
READVERTISE_MAX_S = 300.0
#: One unit of reputation weight on the ledger (specs/ledger.md): a positive attestation.
REP_UNIT = 1 << 16


@dataclass(frozen=True, slots=True)
class ProviderProfile:
    """What a contributor offers, from the hardware probe and the sandbox."""

    determinism_class: str
    memory_mb: int = 4096
    cpu_cores: int = 1
    bench_score: int = 1000
    execution_providers: tuple[str, ...] = ("CPUExecutionProvider",)
    runtimes: tuple[str, ...] = ("onnx",)
    gpus: tuple[GpuInfo, ...] = ()
    sandbox_layers: tuple[str, ...] = ()

    @property
    def gpu_memory_mb(self) -> int:
        return max((g.memory_mb for g in self.gpus), default=0)

    def classes(self) -> tuple[str, ...]:
        return provider_classes(
            runtimes=self.runtimes,
            execution_providers=self.execution_providers,
            memory_mb=self.memory_mb,
            gpu_memory_mb=self.gpu_memory_mb,
        )


@dataclass(slots=True)
class JobRecord:
    """A job submitted on this node, as the API shows it."""

    job_id: bytes
    spec: JobSpec
    submitted_ms: int
    model_name: str
    events: list[tuple[int, str, str]] = field(default_factory=list)
    done: scheduler.JobDone | None = None
    closed: bool = False
    outputs: dict[str, Array] | None = None
    changed: trio.Event = field(default_factory=trio.Event)

    def touch(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def to_json(self, phase: str) -> dict[str, Any]:
        done = self.done
        out: dict[str, Any] = {
            "job_id": self.job_id.hex(),
            "model": self.model_name,
            "phase": phase,
            "status": done.status if done else "pending",
            "done": done is not None,
            "closed": self.closed,
            "reason": done.reason if done else "",
            "redundancy": self.spec.redundancy,
            "max_price": self.spec.max_price,
            "submitted_ms": self.submitted_ms,
            "deadline_ms": self.spec.deadline_ms,
            "events": [{"at_ms": t, "event": e, "detail": d} for t, e, d in self.events[-50:]],
            "paid": [],
            "output_hash": None,
            "output_names": sorted(self.outputs) if self.outputs else [],
            "no_bids": None,
        }
        if done is not None:
            out["paid"] = [
                {"provider": protocol.peer_id(p.provider), "amount": p.amount} for p in done.paid
            ]
            if done.output is not None:
                out["output_hash"] = done.output.hash.hex()
                out["determinism_class"] = done.output.determinism_class
            if done.no_bids is not None:
                nb = done.no_bids
                out["no_bids"] = {
                    "providers_asked": nb.providers_asked,
                    "reasons": {r: n for r, n in nb.reasons},
                    "primary": nb.primary,
                    "lowest_floor": nb.lowest_floor,
                    "advice": list(nb.advice),
                }
        return out


class Node:
    """One node: identity, network, ledger, sandbox and the marketplace machines."""

    def __init__(
        self,
        key: nacl.signing.SigningKey,
        config: NodeConfig,
        net: Network,
        genesis: ledger.Genesis,
        *,
        store: ledger.StoreThread | None = None,
        sandbox: Sandbox | None = None,
        profile: ProviderProfile | None = None,
        clock_base_ms: int | None = None,
        rng: random.Random | None = None,
        state_dir: Path | None = None,
    ) -> None:
        """``state_dir``: where the node keeps what must survive a restart (its receipts);
        ``None`` keeps nothing."""
        self.key = key
        self.me = bytes(key.verify_key)
        self.peer_id = protocol.peer_id(self.me)
        self.config = config
        self.chain_id = genesis.chain_id
        self.net = net
        self.genesis = genesis
        self.roles = frozenset(config.roles)
        self.rng = rng or random.Random()
        self.metrics = NodeMetrics()
        self.content = ContentStore()
        self.jobs: dict[bytes, JobRecord] = {}
        self.bad_messages: dict[str, int] = {}
        self.ledger = LedgerService(
            net,
            genesis,
            store=store,
            producer_key=key if "coordinator" in self.roles else None,
            interval_ms=config.coordinator.block_interval_ms,
            sync_interval_ms=max(200, config.coordinator.block_interval_ms * 2),
            sources=[c for c in genesis.coordinators if c != self.me],
        )
        self.sandbox = sandbox
        self.profile = profile
        self.requester: scheduler.Requester | None = None
        self.provider: scheduler.Provider | None = None
        self._clock_base_ms = clock_base_ms
        self._nursery: trio.Nursery | None = None
        self._running: dict[bytes, trio.CancelScope] = {}
        self._paid_seen: dict[bytes, int] = {}
        self._payees: dict[bytes, frozenset[bytes]] = {}
        self._pending_attests: dict[bytes, list[scheduler.Attest]] = {}
        self._reported: set[tuple[bytes, bytes]] = set()
        self._providers_cache: dict[str, tuple[int, list[PeerKey]]] = {}
        self._looking_up: set[str] = set()
        self._advert_seq = 0
        self._started = trio.Event()
        #: While a market request is handled: its sender, and the messages for it that the
        #: machines produce meanwhile, which go back in the response (one round trip less).
        self._replying: tuple[PeerKey, list[bytes]] | None = None
        self.receipts = ReceiptStore(state_dir / "receipts" if state_dir is not None else None)
        #: Receipt files to write or remove, in order, in a worker thread: a write waits
        #: for fsync, which must not stall the event loop.
        self._disk_send, self._disk_recv = trio.open_memory_channel[Callable[[], None]](math.inf)
        #: Receipts kept from before a restart, claimed by the daemon itself.
        self._kept: dict[bytes, KeptReceipt] = {}
        #: Open escrows of ours that the requester machine does not know (it restarted),
        #: and whether their refund was submitted.
        self._orphans: dict[bytes, bool] = {}
        self._next_orphan_scan = 0
        self.txq = TxQueue(
            key, lambda: self.ledger.state, self.ledger.submit, chain_id=self.chain_id
        )
        self.ledger.on_dropped.append(self.txq.dropped)
        if "contributor" in self.roles and (sandbox is None or profile is None):
            raise RoleMissing("a contributor needs a sandbox and a provider profile")

    # --- running -----------------------------------------------------------------------

    def now_ms(self) -> int:
        return self.clock.now_ms()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; reports started once serving."""
        self.clock = Clock(self._clock_base_ms)
        self.timers = Timers(self.clock)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.ledger.run)
            self._make_machines()
            self._recover()
            self.net.set_handler(MARKET_PROTOCOL, self._serve_market)
            self.net.set_handler(CONTENT_PROTOCOL, self._serve_content, max_request_bytes=4096)
            self.net.set_handler(GENESIS_PROTOCOL, self._serve_genesis, max_request_bytes=64)
            if "coordinator" in self.roles:
                self.net.set_handler(REPORT_PROTOCOL, self._serve_report)
            nursery.start_soon(self.timers.run, self._fire)
            nursery.start_soon(self._watch_ledger)
            nursery.start_soon(self.txq.run)
            nursery.start_soon(self._write_receipts)
            if self.provider is not None:
                for klass in self.provider.config.capability_classes:
                    inbox = self.net.subscribe(job_topic(self.chain_id, klass))
                    nursery.start_soon(self._listen_jobs, inbox)
                await self._advertise()
                nursery.start_soon(self._keep_advertising)
            self._started.set()
            task_status.started()

    async def _write_receipts(self) -> None:
        """Carry out the receipt writes and removals one after another, off the loop."""
        async for op in self._disk_recv:
            await trio.to_thread.run_sync(op)

    def _recover(self) -> None:
        """Load the receipts a previous run of this node kept, to claim with (open escrows
        it left are found block by block: ``_find_orphans``)."""
        if self.provider is not None:
            self._kept = {k.job_id: k for k in self.receipts.load(self.chain_id, self.me)}
            if self._kept:
                log.info("%d receipts kept from before a restart", len(self._kept))

    def _find_orphans(self, state: ledger.State) -> None:
        """Open escrows of ours that the requester machine does not know: it restarted
        while they were open. Looked for every ``ORPHAN_SCAN_BLOCKS`` (the ledger may still
        be catching up after the restart)."""
        assert self.requester is not None
        known = self.requester.jobs
        found = [
            job_id
            for job_id, e in state.escrows()
            if e.owner == self.me and e.is_open and job_id not in known
        ]
        for job_id in found:
            if job_id not in self._orphans:
                log.info("escrow of job %s is from before a restart", job_id.hex()[:12])
                self._orphans[job_id] = False
        self._next_orphan_scan = state.height + ORPHAN_SCAN_BLOCKS

    def _recovered(self, state: ledger.State, now: int) -> None:
        """Claim with kept receipts; refund orphaned escrows at their expiry."""
        for job_id, kept in list(self._kept.items()):
            e = state.escrow(job_id)
            if e is None:
                continue  # not synced that far yet
            if (
                not e.is_open
                or e.paid_to(self.me) > 0
                or self.me in e.claimed
                or state.height >= e.expiry_height
            ):
                del self._kept[job_id]
                self._disk_send.send_nowait(functools.partial(self.receipts.drop, job_id))
                continue
            if not kept.claimed and state.height >= e.claim_height and now >= kept.deadline_ms:
                kept.claimed = True
                self._one("provider", scheduler.ClaimWithReceipt(job_id, kept.award, kept.receipt))
        for job_id, refunded in list(self._orphans.items()):
            e = state.escrow(job_id)
            if e is None or not e.is_open:
                del self._orphans[job_id]
            elif not refunded and state.height >= e.expiry_height:
                self._orphans[job_id] = True
                self._one("requester", scheduler.Refund(job_id))

    def _make_machines(self) -> None:
        height = self.ledger.state.height
        now = self.now_ms()
        if "requester" in self.roles:
            self.requester = scheduler.Requester(
                scheduler.RequesterConfig(
                    key=self.key,
                    chain_id=self.chain_id,
                    reputation=self._reputation,
                    compare=_compare,
                    rng=random.Random(self.rng.random()),
                    claim_window_blocks=CLAIM_WINDOW_BLOCKS,
                    settle_margin_blocks=SETTLE_MARGIN_BLOCKS,
                )
            )
            self.requester.block(height, now)
        if "contributor" in self.roles:
            assert self.profile is not None
            p = self.profile
            c = self.config.contributor
            self.provider = scheduler.Provider(
                scheduler.ProviderConfig(
                    key=self.key,
                    chain_id=self.chain_id,
                    capability_classes=p.classes(),
                    runtimes=p.runtimes,
                    execution_providers=p.execution_providers,
                    memory_mb=p.memory_mb,
                    gpu_memory_mb=p.gpu_memory_mb,
                    determinism_class=p.determinism_class,
                    price_floor=c.price_floor,
                    max_concurrency=c.max_concurrency,
                    bench_score=max(1, p.bench_score),
                    base_run_ms=c.base_run_ms,
                    claim_window_blocks=CLAIM_WINDOW_BLOCKS,
                    accepts_untrusted=c.allow_untrusted,
                )
            )
            self.provider.block(height, now)

    async def _advertise(self) -> None:
        assert self.profile is not None and self.provider is not None
        await self.net.advertise(self._advert(), renew=self._advert)

    async def _keep_advertising(self) -> None:
        """Advertise again now and then: a first announcement can be lost while the DHT
        has only just met its peers, and the network itself repeats it only every few
        minutes. After 3 s, then 20 s, doubling up to 5 minutes (each round is DHT
        traffic for every peer)."""
        delay = READVERTISE_FIRST_S
        while True:
            await trio.sleep(delay)
            delay = max(READVERTISE_EVERY_S, min(READVERTISE_MAX_S, delay * 2))
            try:
                await self._advertise()
            except NetworkError as exc:
                log.info("advertising failed (will retry): %s", exc)

    def _advert(self) -> Signed[Advert]:
        assert self.profile is not None and self.provider is not None
        p = self.profile
        self._advert_seq += 1
        now = self.now_ms()
        advert = Advert(
            node_id=self.me,
            seq=now * 16 + self._advert_seq % 16,
            addresses=self.net.addresses()[:16],
            capability_classes=self.provider.config.capability_classes[:32],
            runtimes=p.runtimes,
            determinism_classes=(p.determinism_class,),
            cpu_cores=min(p.cpu_cores, 65535),
            memory_mb=p.memory_mb,
            gpus=p.gpus,
            sandbox_layers=p.sandbox_layers[:16],
            bench_score=p.bench_score,
            price_floor=self.config.contributor.price_floor,
            max_concurrency=self.config.contributor.max_concurrency,
            issued_ms=now,
            expires_ms=now + ADVERT_LIFETIME_MS,
        )
        return protocol.sign(advert, self.key, self.chain_id)

    # --- ledger ------------------------------------------------------------------------

    def _reputation(self, who: bytes) -> scheduler.Reputation:
        state = self.ledger.state
        rep = state.reputation(who)
        settled = state.account(who).rep_s // REP_UNIT
        return scheduler.Reputation(
            score_permille=min(1000, int(rep * 1000)), settled_jobs=int(settled)
        )

    async def _watch_ledger(self) -> None:
        height = self.ledger.state.height
        while True:
            await self.ledger.wait_height(height + 1)
            state = self.ledger.state
            height = state.height
            self._on_ledger(state)

    def _on_ledger(self, state: ledger.State) -> None:
        now = self.now_ms()
        self.metrics.height.set(state.height)
        self.metrics.balance.set(state.balance(self.me))
        self.txq.on_block()
        if self.requester is not None:
            req = self.requester
            for job_id, job in list(req.jobs.items()):
                e = state.escrow(job_id)
                if e is None:
                    continue
                if job.phase == "locking":
                    self._execute("requester", req.escrow_locked(job_id, now))
                if not e.is_open:
                    self._execute("requester", req.escrow_closed(job_id, now))
                    record = self.jobs.get(job_id)
                    if record is not None and not record.closed:
                        record.closed = True
                        record.touch()
                        self.content.release(job_id)
                    self._pending_attests.pop(job_id, None)
                    self._payees.pop(job_id, None)
                    if req.jobs[job_id].phase == "closed":
                        req.forget(job_id)  # the API's record keeps what the user sees
            self._execute("requester", req.block(state.height, now))
            if state.height >= self._next_orphan_scan:
                self._find_orphans(state)
        if self.provider is not None:
            prov = self.provider
            for job_id in list(prov.work):
                e = state.escrow(job_id)
                if e is None:
                    continue
                paid = e.paid_to(self.me)
                seen = self._paid_seen.get(job_id, 0)
                if paid > seen:
                    self._paid_seen[job_id] = paid
                    self._execute("provider", prov.paid(job_id, paid - seen, now))
                if not e.is_open:
                    self._execute("provider", prov.escrow_closed(job_id, now))
                    self._paid_seen.pop(job_id, None)
            self._execute("provider", prov.block(state.height, now))
        if self._kept or self._orphans:
            self._recovered(state, now)

    # --- carrying out effects ----------------------------------------------------------

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)

    def _execute(self, role: str, effects: list[scheduler.Effect]) -> None:
        for fx in effects:
            try:
                self._one(role, fx)
            except Exception:  # a driver bug must not take the node down
                log.exception("carrying out %s failed", type(fx).__name__)

    def _one(self, role: str, fx: scheduler.Effect) -> None:
        S = scheduler
        if isinstance(fx, S.SetTimer):
            self.timers.set((role, fx.key), fx.at_ms)
        elif isinstance(fx, S.CancelTimer):
            self.timers.cancel((role, fx.key))
        elif isinstance(fx, S.Send):
            if self._replying is not None and self._replying[0] == fx.peer:
                self._replying[1].append(fx.message.raw)
            else:
                self._spawn(self._send, fx.peer, fx.message.raw, b"")
        elif isinstance(fx, S.Publish):
            self._spawn(self._publish, fx.topic, fx.message.raw)
        elif isinstance(fx, S.Deliver):
            sealed = S.seal(fx.peer, fx.output) if fx.output else b""
            self._spawn(self._send, fx.peer, fx.result.raw, sealed)
        elif isinstance(fx, S.Misbehaved):
            self._bad(fx.peer, fx.reason)
        elif isinstance(fx, S.LockEscrow):
            self._lock(fx)
        elif isinstance(fx, S.Settle):
            self._settle(fx)
        elif isinstance(fx, S.Refund):
            self._tx(
                "refund",
                lambda s, x: tx.refund(
                    self.key, self.chain_id, s, job_id=fx.job_id, expiry_height=x
                ),
            )
        elif isinstance(fx, S.ClaimWithReceipt):
            self._tx(
                "claim",
                lambda s, x: tx.claim(
                    self.key,
                    self.chain_id,
                    s,
                    job_id=fx.job_id,
                    award=fx.award.raw,
                    receipt=fx.receipt.raw,
                    expiry_height=x,
                ),
            )
        elif isinstance(fx, S.Attest):
            self._attest(fx)
        elif isinstance(fx, S.Slash):
            self._report(fx.provider, [e.raw for e in fx.evidence if e.signer == fx.provider])
        elif isinstance(fx, S.RunJob):
            self._spawn(self._run_job, fx)
        elif isinstance(fx, S.AbortJob):
            scope = self._running.get(fx.job_id)
            if scope is not None:
                scope.cancel()
        elif isinstance(fx, S.NotifyUser):
            if role == "provider":
                self._keep_receipts(fx)
            record = self.jobs.get(fx.job_id)
            if record is not None:
                record.events.append((self.now_ms(), fx.event, fx.detail))
                record.touch()
            log.info("job %s: %s %s", fx.job_id.hex()[:12], fx.event, fx.detail)
        elif isinstance(fx, S.JobDone):
            self._job_done(fx)

    def _keep_receipts(self, fx: scheduler.NotifyUser) -> None:
        """Keep a receipt on disk while it may be needed for a claim (until closed)."""
        if fx.event == "closed":
            self._disk_send.send_nowait(functools.partial(self.receipts.drop, fx.job_id))
            return
        if fx.event != "receipted" or self.provider is None:
            return
        work = self.provider.work.get(fx.job_id)
        if work is not None and work.award is not None and work.receipt is not None:
            keep = functools.partial(
                self.receipts.keep, work.award, work.receipt, work.spec.deadline_ms
            )
            self._disk_send.send_nowait(keep)

    def _tx(
        self,
        kind: str,
        build: Callable[[int, int], Signed[protocol.Transaction]],
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self.metrics.txs.labels(kind).inc()
        self.txq.put(TxRequest(kind, build, on_reject))

    def _lock(self, fx: scheduler.LockEscrow) -> None:
        def rejected(reason: str) -> None:
            if self.requester is not None:
                now = self.now_ms()
                self._execute("requester", self.requester.escrow_failed(fx.job_id, reason, now))

        self._tx(
            "lock",
            lambda s, x: tx.lock(
                self.key,
                self.chain_id,
                s,
                job_id=fx.job_id,
                amount=fx.amount,
                claim_height=fx.claim_height,
                escrow_expiry=fx.expiry_height,
                max_per_payee=fx.max_per_payee,
                max_payees=fx.max_payees,
                expiry_height=min(x, fx.expiry_height),
            ),
            rejected,
        )

    def _settle(self, fx: scheduler.Settle) -> None:
        payouts = fx.as_dict()
        self._payees[fx.job_id] = frozenset(payouts)
        self._tx(
            "settle",
            lambda s, x: tx.settle(
                self.key, self.chain_id, s, job_id=fx.job_id, payouts=payouts, expiry_height=x
            ),
        )
        for attest in self._pending_attests.pop(fx.job_id, []):
            self._attest(attest)

    def _attest(self, fx: scheduler.Attest) -> None:
        """The ledger takes attestations only about a paid party of a settled job, so they
        wait for the job's Settle (the machine emits them just before it) and go after it.
        A verdict against a provider the job did not pay goes to a coordinator as evidence
        (its own signed Results only: that is what a slash may carry)."""
        if fx.job_id not in self._payees:
            self._pending_attests.setdefault(fx.job_id, []).append(fx)
            return
        if fx.subject in self._payees[fx.job_id]:
            self._tx(
                "attest",
                lambda s, x: tx.attest(
                    self.key,
                    self.chain_id,
                    s,
                    job_id=fx.job_id,
                    subject=fx.subject,
                    positive=fx.positive,
                    expiry_height=x,
                ),
            )
        elif not fx.positive:
            self._report(fx.subject, [e.raw for e in fx.evidence if e.signer == fx.subject])

    def _report(self, offender: bytes, evidence: list[bytes]) -> None:
        key = (offender, protocol.content_hash(b"".join(evidence)))
        if key in self._reported or not evidence:
            return
        self._reported.add(key)
        self._spawn(self._send_report, offender, evidence[:4])

    async def _send_report(self, offender: bytes, evidence: list[bytes]) -> None:
        data = protocol.pack([offender, "failed_verification", evidence])
        if "coordinator" in self.roles:
            await self._serve_report(self.me, data)
            return
        for coordinator in self.genesis.coordinators:
            try:
                await self.net.request(coordinator, REPORT_PROTOCOL, data, timeout=10)
                return
            except NetworkError as exc:
                log.info("report to %s failed: %s", protocol.peer_id(coordinator), exc)

    async def _send(self, peer: PeerKey, raw: bytes, sealed: bytes) -> None:
        request = protocol.pack([raw, sealed])
        if peer == self.me:  # a node may be both requester and provider of one job
            replies = await self._serve_market(self.me, request)
        else:
            try:
                replies = await self.net.request(peer, MARKET_PROTOCOL, request, timeout=10)
            except NetworkError as exc:
                self.metrics.sends_failed.inc()
                log.info("send to %s failed: %s", protocol.peer_id(peer), exc)
                return
        if replies:
            self._take_replies(peer, replies)

    def _take_replies(self, peer: PeerKey, data: bytes) -> None:
        """The messages a peer answered a market request with, taken as if it had sent
        each on its own (messages of ours they cause go out as requests of their own)."""
        try:
            value = protocol.unpack(data, max_bytes=MAX_REPLY_BYTES)
            if type(value) is not list or len(value) > MAX_REPLIES:
                raise protocol.RemoteProtocolError(f"expected at most {MAX_REPLIES} replies")
            if any(type(raw) is not bytes for raw in value):
                raise protocol.RemoteProtocolError("a reply is a signed message's bytes")
        except protocol.ProtocolError as exc:
            self._bad(peer, f"malformed market replies: {exc}")
            return
        for raw in value:
            with contextlib.suppress(RequestRejected):
                self._dispatch(peer, raw, b"")

    async def _publish(self, klass: str, raw: bytes) -> None:
        try:
            await self.net.publish(job_topic(self.chain_id, klass), raw)
        except NetworkError as exc:
            self.metrics.sends_failed.inc()
            log.info("publishing on %s failed: %s", klass, exc)
        if self.provider is not None and klass in self.provider.config.capability_classes:
            self._execute("provider", self.provider.receive(raw, self.now_ms()))

    def _fire(self, key: Hashable) -> None:
        assert isinstance(key, tuple)
        role: str = key[0]
        tkey: scheduler.TimerKey = key[1]
        machine: Any = self.requester if role == "requester" else self.provider
        if machine is not None:
            self._execute(role, machine.timer(tkey, self.now_ms()))

    def _bad(self, peer: bytes | None, reason: str) -> None:
        self.metrics.bad_messages.inc()
        who = protocol.peer_id(peer) if peer else "unknown"
        self.bad_messages[who] = self.bad_messages.get(who, 0) + 1
        if self.bad_messages[who] == 1:
            log.warning("peer %s misbehaved: %s", who, reason)

    def _job_done(self, fx: scheduler.JobDone) -> None:
        self.metrics.jobs_done.labels(fx.status).inc()
        record = self.jobs.get(fx.job_id)
        if record is None:
            return  # a spot check's canary
        record.done = fx
        if fx.output is not None:
            try:
                record.outputs = outputs_from_bytes(fx.output.data)
            except protocol.ProtocolError as exc:
                log.warning("verified output of %s unreadable: %s", fx.job_id.hex(), exc)
        record.events.append((self.now_ms(), "done", f"{fx.status} {fx.reason}".strip()))
        record.touch()

    # --- serving the network -----------------------------------------------------------

    async def _serve_market(self, peer: PeerKey, request: bytes) -> bytes:
        """Take one market message; answer with the messages for ``peer`` it caused
        (``[message, ...]``), or nothing."""
        try:
            value = protocol.unpack(request, max_bytes=MAX_CONTENT_BYTES + 65536)
            if type(value) is not list or len(value) != 2:
                raise protocol.RemoteProtocolError("expected [message, sealed]")
            raw, sealed = value
            if type(raw) is not bytes or type(sealed) is not bytes:
                raise protocol.RemoteProtocolError("expected [message, sealed] as bytes")
        except protocol.ProtocolError as exc:
            self._bad(peer, f"malformed market frame: {exc}")
            raise RequestRejected(f"malformed market frame: {exc}") from None
        replies: list[bytes] = []
        self._replying = (peer, replies)
        try:
            self._dispatch(peer, raw, sealed)
        finally:
            self._replying = None
        # Replies are short signed messages, so the bounds the sender accepts are not
        # expected to bind; whatever would exceed them goes as requests of its own.
        kept, size = 0, 0
        for raw_reply in replies:
            size += len(raw_reply) + 16
            if kept == MAX_REPLIES or size > MAX_REPLY_BYTES:
                break
            kept += 1
        for extra in replies[kept:]:
            self._spawn(self._send, peer, extra, b"")
        del replies[kept:]
        return protocol.pack(replies) if replies else b""

    def _dispatch(self, peer: PeerKey, raw: bytes, sealed: bytes) -> None:
        """Hand a market message to the machine that takes it (RequestRejected if none)."""
        try:
            inner = protocol.unpack(raw, check_types=False)
            tag = inner[0] if type(inner) is list and inner else None
        except protocol.ProtocolError as exc:
            self._bad(peer, f"malformed market frame: {exc}")
            raise RequestRejected(f"malformed market frame: {exc}") from None
        now = self.now_ms()
        if tag in _PROVIDER_TAGS and self.provider is not None:
            self.metrics.messages.labels(str(tag)).inc()
            self._execute("provider", self.provider.receive(raw, now))
        elif tag in _REQUESTER_TAGS and self.requester is not None:
            self.metrics.messages.labels(str(tag)).inc()
            output = self._open_output(raw, sealed) if tag == Result.TAG else None
            self._execute("requester", self.requester.receive(raw, now, output=output))
        else:
            self._bad(peer, f"message {tag!r} this node does not take")
            raise RequestRejected(f"this node does not take {tag!r} messages")

    def _open_output(self, raw: bytes, sealed: bytes) -> bytes | None:
        if not sealed:
            return None
        try:
            result: Result = protocol.decode(raw, self.chain_id, Result).message
            return scheduler.open_sealed(self.key, sealed, result.output_hash)
        except (protocol.ProtocolError, scheduler.SchedulerError):
            return None

    async def _listen_jobs(self, inbox: Any) -> None:
        async with inbox:
            async for msg in inbox:
                if self.provider is not None:
                    self.metrics.messages.labels("announce").inc()
                    self._execute("provider", self.provider.receive(msg.data, self.now_ms()))

    async def _serve_content(self, peer: PeerKey, request: bytes) -> bytes:
        """Model and inputs of a job, sealed to a provider holding a live award of it."""
        try:
            job_id, digest = protocol.unpack(request)
            if type(job_id) is not bytes or type(digest) is not bytes:
                raise protocol.RemoteProtocolError("expected [job_id, hash]")
        except (protocol.ProtocolError, ValueError, TypeError):
            self._bad(peer, "malformed content request")
            raise RequestRejected("a content request is [job_id, hash]") from None
        job = self.requester.jobs.get(job_id) if self.requester is not None else None
        if job is None:
            raise RequestRejected("no such job here")
        if not any(r.provider == peer for r in job.live()):
            self._bad(peer, "content request without an award")
            raise RequestRejected("only a provider awarded this job may fetch its data")
        spec = job.spec
        if digest != spec.model_hash and digest not in {i.hash for i in spec.inputs}:
            raise RequestRejected("that content is not part of the job")
        data = self.content.get(digest)
        if data is None:
            raise RequestRejected("the requester no longer holds that content")
        return scheduler.seal(peer, data)

    async def _serve_genesis(self, peer: PeerKey, request: bytes) -> bytes:
        return self.genesis.encode()

    async def _serve_report(self, peer: PeerKey, request: bytes) -> bytes:
        """A coordinator slashes a provider whose signed Result a requester found wrong."""
        try:
            offender, _reason, evidence = protocol.unpack(request)
            if type(offender) is not bytes or len(offender) != 32 or type(evidence) is not list:
                raise protocol.RemoteProtocolError("expected [offender, reason, [results]]")
            evidence = [bytes(e) for e in evidence[:4]]
            for e in evidence:
                res = protocol.decode(e, self.chain_id, Result).message
                if res.provider != offender:
                    raise protocol.RemoteProtocolError("evidence not signed by the offender")
        except (protocol.ProtocolError, ValueError, TypeError) as exc:
            self._bad(peer, f"bad report: {exc}")
            raise RequestRejected(f"bad report: {exc}") from None
        state = self.ledger.state
        account = state.account(offender)
        amount = min(account.stake + account.unbonding_total, self.config.coordinator.slash_amount)
        if amount <= 0:
            return protocol.pack(["nothing staked"])
        self._tx(
            "slash",
            lambda s, x: tx.slash(
                self.key,
                self.chain_id,
                s,
                offender=offender,
                amount=amount,
                reason="failed_verification",
                evidence=evidence,
                expiry_height=x,
            ),
        )
        return protocol.pack(["slashing"])

    # --- the provider's runs -----------------------------------------------------------

    async def _run_job(self, fx: scheduler.RunJob) -> None:
        spec: JobSpec = fx.job.message
        job_id = fx.job.id
        award: Award = fx.award.message
        result: dict[str, Any] | None = None
        with trio.CancelScope() as scope:
            self._running[job_id] = scope
            self.metrics.running.inc()
            try:
                result = await self._fetch_and_run(spec, job_id, award)
            finally:
                self._running.pop(job_id, None)
                self.metrics.running.dec()
        if result is None or self.provider is None:
            return
        self.metrics.runs.labels(result["outcome"]).inc()
        self._execute("provider", self.provider.job_finished(job_id, self.now_ms(), **result))

    async def _fetch(self, requester: PeerKey, job_id: bytes, digest: bytes, size: int) -> bytes:
        data = self.content.get(digest)
        if data is not None:
            return data
        if size > MAX_CONTENT_BYTES:
            raise JobSubmitError(f"content of {size} bytes is over the {MAX_CONTENT_BYTES} limit")
        sealed = await self.net.request(
            requester, CONTENT_PROTOCOL, protocol.pack([job_id, digest]), timeout=30
        )
        data = scheduler.open_sealed(self.key, sealed, digest)
        self.content.cache(data, digest)
        return data

    async def _fetch_and_run(
        self, spec: JobSpec, job_id: bytes, award: Award
    ) -> dict[str, Any] | None:
        assert self.sandbox is not None
        started = trio.current_time()
        try:
            model = await self._fetch(spec.requester, job_id, spec.model_hash, spec.model_size)
            inputs: dict[str, Array] = {}
            for ref in spec.inputs:
                data = await self._fetch(spec.requester, job_id, ref.hash, ref.size)
                inputs[ref.name] = tensor_from_bytes(data)
        except (
            NetworkError,
            scheduler.SchedulerError,
            protocol.ProtocolError,
            JobSubmitError,
        ) as exc:
            return _failed("crashed", f"could not fetch the job's data: {exc}")
        if self.config.contributor.test_run_delay_ms:
            await trio.sleep(self.config.contributor.test_run_delay_ms / 1000)
        # The same limits for every job, so that a warm worker (kept per owner, model and
        # limits) serves the next job of the same owner; a run past the award's deadline
        # is aborted by the Provider machine (AbortJob) and its worker killed at the limit.
        limits = self.sandbox.config.limits
        job = JobRequest(
            runtime=spec.runtime,
            model=model,
            inputs=inputs,
            owner=spec.requester,
            threads=spec.threads,
            graph_opt_level=spec.graph_opt_level,
            execution_provider=spec.requirements.execution_provider,
            limits=limits,
            model_hash=spec.model_hash,
        )
        fetched = trio.current_time()
        try:
            outcome = await trio.to_thread.run_sync(self.sandbox.run, job, abandon_on_cancel=True)
        except Exception as exc:  # the sandbox refused the job as a whole
            return _failed("rejected", str(exc))
        log.info(
            "job %s: %s in %.0f ms (%s worker, data fetched in %.0f ms)",
            job_id.hex()[:12],
            outcome.kind,
            (trio.current_time() - fetched) * 1000,
            "warm" if outcome.warm else "cold",
            (fetched - started) * 1000,
        )
        if not outcome.ok:
            return {
                "outcome": outcome.kind,
                "output": None,
                "usage": outcome.usage,
                "message": outcome.message,
            }
        outputs = dict(outcome.outputs)
        commitment = outcome.commitment
        if self.config.contributor.test_corrupt_outputs and outputs:
            name = sorted(outputs)[0]
            wrong = np.array(outputs[name], copy=True)
            wrong.flat[0] = wrong.flat[0] + 1
            outputs[name] = wrong
            commitment = commitment_of(outputs)
        output = scheduler.Output(outputs_bytes(outputs), commitment, outcome.determinism_class)
        return {"outcome": "ok", "output": output, "usage": outcome.usage, "message": ""}

    # --- the API's operations ----------------------------------------------------------

    def job_record(self, job_id_hex: str) -> JobRecord:
        try:
            job_id = bytes.fromhex(job_id_hex)
        except ValueError:
            raise JobNotFound(f"{job_id_hex!r} is not a job id (64 hex digits)") from None
        record = self.jobs.get(job_id)
        if record is None:
            raise JobNotFound(f"no job {job_id_hex} on this node; check the id")
        return record

    def job_phase(self, record: JobRecord) -> str:
        if self.requester is None:
            return "unknown"
        job = self.requester.jobs.get(record.job_id)
        return job.phase if job is not None else "closed"

    async def providers_for(self, klass: str, *, fresh: bool = False) -> list[PeerKey]:
        """Providers of ``klass`` found on the DHT. The last non-empty answer is kept and
        used while a new lookup runs in the background (every 30 s): a lookup can come
        back empty on a busy network, and a submit should not wait for one."""
        now = self.now_ms()
        cached = self._providers_cache.get(klass)
        if not fresh and cached is not None and cached[1]:
            if now - cached[0] >= PROVIDERS_REFRESH_MS and klass not in self._looking_up:
                self._looking_up.add(klass)
                self._spawn(self._lookup, klass)
            return cached[1]
        return await self._lookup(klass)

    async def _lookup(self, klass: str) -> list[PeerKey]:
        try:
            records = await self.net.find_providers(klass, timeout=3.0)
        except NetworkError as exc:
            log.info("finding providers of %s failed: %s", klass, exc)
            records = []
        finally:
            self._looking_up.discard(klass)
        found = [r.signer for r in records if r.signer != self.me]
        old = self._providers_cache.get(klass)
        if found or old is None:
            self._providers_cache[klass] = (self.now_ms(), found)
        elif old is not None:
            found = old[1]
        connected = self.net.connected_peers()
        for record in records:  # a first dial costs ~250 ms: not inside a bid window
            if record.signer not in connected and record.signer != self.me:
                self._spawn(self._connect, record.message.addresses)
        return found

    async def _connect(self, addresses: tuple[str, ...]) -> None:
        for address in addresses:
            try:
                await self.net.connect(address)
                return
            except NetworkError as exc:
                log.debug("connecting to %s failed: %s", address, exc)

    async def submit_job(
        self,
        model: bytes,
        inputs: Mapping[str, Array],
        *,
        runtime: str = "onnx",
        redundancy: int = 1,
        max_retries: int = 2,
        max_price: int | None = None,
        deadline_ms: int | None = None,
        min_memory_mb: int = 256,
        model_name: str = "model",
    ) -> bytes:
        """Escrow, sign and announce a job; returns its id."""
        if self.requester is None:
            raise RoleMissing("this node is not a requester; start it with --role requester")
        await self._started.wait()
        rc = self.config.requester
        if runtime not in protocol.RUNTIMES:
            raise JobSubmitError(f"unknown runtime {runtime!r}; use one of {protocol.RUNTIMES}")
        if not model:
            raise JobSubmitError("the model is empty")
        if not 1 <= redundancy <= 16:
            raise JobSubmitError("redundancy must be between 1 and 16")
        if not 0 <= max_retries <= 16:
            raise JobSubmitError("max_retries must be between 0 and 16")
        if not inputs:
            raise JobSubmitError("a job needs at least one input tensor")
        if len(model) > MAX_CONTENT_BYTES:
            raise JobSubmitError(f"the model is over {MAX_CONTENT_BYTES} bytes")
        price = rc.max_price if max_price is None else max_price
        if price < 0:
            raise JobSubmitError("max_price must not be negative")
        blobs: list[tuple[str, bytes]] = []
        for name, array in sorted(inputs.items()):
            data = tensor_bytes(np.asarray(array))
            if len(data) > MAX_CONTENT_BYTES:
                raise JobSubmitError(f"input {name!r} is over {MAX_CONTENT_BYTES} bytes")
            blobs.append((name, data))
        state = self.ledger.state
        budget = redundancy + max_retries
        spendable = state.balance(self.me) - self._locked_pending(state)
        if price * budget > spendable:
            raise JobSubmitError(
                f"escrow needs {price * budget} micro-credits (max_price × (redundancy + "
                f"max_retries)) but the balance available is {spendable}; get credits "
                "(the devnet faucet) or lower max_price"
            )
        now = self.now_ms()
        deadline = now + (rc.deadline_ms if deadline_ms is None else deadline_ms)
        block_ms = self.config.coordinator.block_interval_ms
        blocks_to_deadline = math.ceil((deadline - now) / block_ms)
        expiry = (
            state.height
            + blocks_to_deadline
            + CLAIM_WINDOW_BLOCKS
            + SETTLE_MARGIN_BLOCKS
            + rc.expiry_slack_blocks
        )
        ep = "CPUExecutionProvider"
        requirements_probe = Requirements(
            device="cpu",
            execution_provider=ep,
            min_memory_mb=min_memory_mb,
            capability_class="onnx.cpu.m1",
        )
        klass = job_class(runtime, requirements_probe)
        spec = JobSpec(
            requester=self.me,
            nonce=self.rng.randbytes(16),
            runtime=runtime,
            model_hash=protocol.content_hash(model),
            model_size=len(model),
            inputs=tuple(
                InputRef(name=n, hash=protocol.content_hash(d), size=len(d)) for n, d in blobs
            ),
            requirements=Requirements(
                device="cpu",
                execution_provider=ep,
                min_memory_mb=min_memory_mb,
                capability_class=klass,
            ),
            graph_opt_level="extended",
            threads=1,
            max_price=price,
            redundancy=redundancy,
            max_retries=max_retries,
            verification=VerificationPolicy(
                mode="exact", rtol_e9=1000, atol_e9=1000, spot_check_permille=0
            ),
            created_ms=now,
            bid_window_ms=rc.bid_window_ms,
            deadline_ms=deadline,
            escrow_expiry_height=expiry,
        )
        providers = await self.providers_for(klass)
        now = self.now_ms()
        try:
            job_id, effects = self.requester.submit(spec, now, providers=providers)
        except scheduler.SchedulerError as exc:
            raise JobSubmitError(str(exc)) from None
        self.content.pin(job_id, model)
        for _, data in blobs:
            self.content.pin(job_id, data)
        self.jobs[job_id] = JobRecord(job_id, spec, now, model_name)
        if len(self.jobs) > MAX_JOB_RECORDS:  # forget the oldest closed jobs
            for old in [j for j, r in self.jobs.items() if r.closed][: len(self.jobs) // 10]:
                del self.jobs[old]
        self.metrics.jobs_submitted.inc()
        self._execute("requester", effects)
        return job_id

    def _locked_pending(self, state: ledger.State) -> int:
        """Credits of jobs submitted here whose lock is not in a block yet."""
        if self.requester is None:
            return 0
        return sum(
            j.spec.max_price * j.budget
            for j in self.requester.jobs.values()
            if j.phase == "locking" and j.done is None and state.escrow(j.id) is None
        )

    def faucet(self, account: bytes, amount: int) -> None:
        """Mint demo credits (coordinator only)."""
        if "coordinator" not in self.roles:
            raise RoleMissing("only a coordinator runs the faucet")
        if not 0 < amount <= self.config.coordinator.faucet_max:
            raise JobSubmitError(
                f"faucet amount must be in 1..{self.config.coordinator.faucet_max} micro-credits"
            )
        self._tx(
            "mint",
            lambda s, x: tx.mint(
                self.key, self.chain_id, s, to=account, amount=amount, expiry_height=x
            ),
        )

    def stake(self, amount: int) -> None:
        """Stake some of this node's balance (a contributor's bond against cheating)."""
        if not 0 < amount <= self.ledger.state.balance(self.me):
            raise JobSubmitError("stake must be positive and at most the balance")
        self._tx(
            "stake",
            lambda s, x: tx.stake(self.key, self.chain_id, s, amount=amount, expiry_height=x),
        )


def _failed(kind: str, message: str) -> dict[str, Any]:
    return {"outcome": kind, "output": None, "usage": _ZERO_USAGE, "message": message}


def _compare(a: scheduler.Output, b: scheduler.Output, policy: VerificationPolicy) -> bool:
    """The sandbox's comparison rule, on outputs as they travel."""
    if a.determinism_class == b.determinism_class and policy.mode == "exact":
        return a.commitment == b.commitment
    try:
        xa, xb = outputs_from_bytes(a.data), outputs_from_bytes(b.data)
    except protocol.ProtocolError:
        return False
    try:
        return compare_outputs(
            xa, xb, class_a=a.determinism_class, class_b=b.determinism_class, policy=policy
        ).agree
    except ValueError:
        return False
