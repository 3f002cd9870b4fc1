"""A deterministic discrete-event harness for the marketplace machines.

Virtual time, a seeded message router with latency and loss, a toy ledger that applies the
machines' ledger effects with the ledger's escrow rules and checks conservation, and a fake
sandbox whose output is a deterministic function of the job (a cheater returns another).
Nothing here replaces a machine: the real Requester and Provider run unchanged.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import nacl.signing

import protocol
from protocol import (
    Award,
    InputRef,
    JobSpec,
    Receipt,
    Requirements,
    Usage,
    VerificationPolicy,
    content_hash,
)
from scheduler import (
    AbortJob,
    Attest,
    CancelTimer,
    ClaimWithReceipt,
    Deliver,
    Effect,
    JobDone,
    LockEscrow,
    Misbehaved,
    NotifyUser,
    Output,
    Provider,
    ProviderConfig,
    Publish,
    Refund,
    Reputation,
    Requester,
    RequesterConfig,
    RunJob,
    SealError,
    Send,
    SetTimer,
    Settle,
    Slash,
    TimerKey,
    open_sealed,
    seal,
)

CHAIN = "aimx-sim"
START_MS = 1_790_000_000_000
BLOCK_MS = 1_000
CLASS = "onnx.cpu.m4"
DETERMINISM = "ort-1.32.0/cpu/generic/extended"
CLAIM_WINDOW = 10
SETTLE_MARGIN = 2


def honest_output(spec: JobSpec) -> Output:
    """What every honest sandbox computes for ``spec`` (a stand-in for running the model)."""
    data = b"out:" + content_hash(spec.model_hash + b"".join(i.hash for i in spec.inputs))
    return Output(data, content_hash(b"commit:" + data), DETERMINISM)


def wrong_output(spec: JobSpec, who: bytes) -> Output:
    """A cheater's output: cheap to make and wrong."""
    data = b"bad:" + content_hash(who + spec.model_hash)
    return Output(data, content_hash(b"commit:" + data), DETERMINISM)


# --- the toy ledger -----------------------------------------------------------------


@dataclass
class Escrow:
    owner: bytes
    locked: int
    remaining: int
    claim_height: int
    expiry_height: int
    max_per_payee: int
    max_payees: int
    paid: dict[bytes, int] = field(default_factory=dict)
    status: str = "open"


class ToyLedger:
    """Balances and escrows with the escrow rules of specs/ledger.md; every applied
    transaction keeps ``sum(balances) + sum(open escrows) == minted``."""

    def __init__(self) -> None:
        self.height = 0
        self.balances: dict[bytes, int] = {}
        self.escrows: dict[bytes, Escrow] = {}
        self.minted = 0
        self.pending: list[tuple[bytes, Effect]] = []
        self.rejected: list[tuple[str, str]] = []
        self.good: dict[bytes, int] = {}
        self.bad: dict[bytes, int] = {}
        self.slashed: list[Slash] = []

    def mint(self, who: bytes, amount: int) -> None:
        self.balances[who] = self.balances.get(who, 0) + amount
        self.minted += amount

    def reputation(self, who: bytes) -> Reputation:
        good, bad = self.good.get(who, 0), self.bad.get(who, 0)
        score = 500 if good + bad == 0 else 1000 * good // (good + bad)
        return Reputation(score_permille=score, settled_jobs=good)

    def check_conservation(self) -> None:
        held = sum(e.remaining for e in self.escrows.values() if e.status == "open")
        assert all(b >= 0 for b in self.balances.values())
        assert all(e.remaining >= 0 for e in self.escrows.values())
        assert sum(self.balances.values()) + held == self.minted

    def _credit(self, who: bytes, amount: int) -> None:
        self.balances[who] = self.balances.get(who, 0) + amount

    def apply(self, sender: bytes, fx: Effect) -> list[tuple[str, Any]]:
        """Apply one transaction; return notifications ``(kind, args)`` for the nodes."""
        h = self.height
        out: list[tuple[str, Any]] = []

        def reject(why: str) -> list[tuple[str, Any]]:
            self.rejected.append((type(fx).__name__, why))
            return out

        if isinstance(fx, LockEscrow):
            if fx.job_id in self.escrows:
                return reject("escrowed twice")
            if self.balances.get(sender, 0) < fx.amount:
                out.append(("escrow_failed", (sender, fx.job_id, "insufficient balance")))
                return reject("insufficient balance")
            if not h < fx.expiry_height or not fx.claim_height < fx.expiry_height:
                out.append(("escrow_failed", (sender, fx.job_id, "bad heights")))
                return reject("bad heights")
            self.balances[sender] -= fx.amount
            self.escrows[fx.job_id] = Escrow(
                sender,
                fx.amount,
                fx.amount,
                fx.claim_height,
                fx.expiry_height,
                fx.max_per_payee,
                fx.max_payees,
            )
            out.append(("escrow_locked", (sender, fx.job_id)))
        elif isinstance(fx, Settle):
            e = self.escrows.get(fx.job_id)
            if e is None or e.owner != sender or e.status != "open":
                return reject("settle of an escrow not open or not ours")
            pay = fx.as_dict()
            if not self._payable(e, pay):
                return reject("payouts exceed the escrow's limits")
            for p, amount in sorted(pay.items()):
                self._credit(p, amount)
                e.paid[p] = e.paid.get(p, 0) + amount
                out.append(("paid", (p, fx.job_id, amount)))
            self._credit(e.owner, e.remaining - sum(pay.values()))
            e.remaining, e.status = 0, "settled"
            out.append(("closed", (fx.job_id,)))
        elif isinstance(fx, ClaimWithReceipt):
            e = self.escrows.get(fx.job_id)
            award: Award = fx.award.message
            receipt: Receipt = fx.receipt.message
            if e is None or e.status != "open":
                return reject("claim on an escrow not open")
            if fx.award.signer != e.owner or fx.receipt.signer != e.owner:
                return reject("evidence not signed by the owner")
            if award.provider != sender or receipt.provider != sender:
                return reject("claim by another provider")
            if award.replica != receipt.replica or award.job_id != fx.job_id:
                return reject("evidence mismatch")
            if not e.claim_height <= h < e.expiry_height:
                return reject(f"claim at {h} outside [{e.claim_height}, {e.expiry_height})")
            if sender in e.paid or not self._payable(e, {sender: award.price}):
                return reject("claimed twice or over the limit")
            self._credit(sender, award.price)
            e.paid[sender] = award.price
            e.remaining -= award.price
            out.append(("paid", (sender, fx.job_id, award.price)))
        elif isinstance(fx, Refund):
            e = self.escrows.get(fx.job_id)
            if e is None or e.owner != sender or e.status != "open" or h < e.expiry_height:
                return reject("refund before expiry or of an escrow not open")
            self._credit(e.owner, e.remaining)
            e.remaining, e.status = 0, "refunded"
            out.append(("closed", (fx.job_id,)))
        elif isinstance(fx, Attest):
            table = self.good if fx.positive else self.bad
            table[fx.subject] = table.get(fx.subject, 0) + 1
        elif isinstance(fx, Slash):
            self.slashed.append(fx)
        self.check_conservation()
        return out

    def _payable(self, e: Escrow, pay: dict[bytes, int]) -> bool:
        payees = set(e.paid) | set(pay)
        return (
            sum(pay.values()) <= e.remaining
            and len(payees) <= e.max_payees
            and all(e.paid.get(p, 0) + a <= e.max_per_payee for p, a in pay.items())
        )


# --- nodes and the loop --------------------------------------------------------------


@dataclass
class Node:
    key: nacl.signing.SigningKey
    requester: Requester | None = None
    provider: Provider | None = None
    behaviour: str = "honest"  # honest | cheat
    online: bool = True
    back_at: int | None = None
    timers: dict[tuple[str, TimerKey], int] = field(default_factory=dict)
    crash_after: Callable[[Effect], bool] | None = None
    run_ms: int = 400

    @property
    def pub(self) -> bytes:
        return bytes(self.key.verify_key)


class Sim:
    """The event loop. ``run_until`` is bounded in virtual time and in events."""

    def __init__(
        self, seed: int = 0, *, loss: float = 0.0, latency: tuple[int, int] = (5, 40)
    ) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.loss = loss
        self.latency = latency
        self.now = START_MS
        self.queue: list[tuple[int, int, Callable[[], None]]] = []
        self.seq = 0
        self.nodes: list[Node] = []
        self.ledger = ToyLedger()
        self.done: dict[bytes, JobDone] = {}
        self.notes: list[tuple[bytes, NotifyUser]] = []
        self.misbehaved: list[Misbehaved] = []
        self.delivered: dict[bytes, set[bytes]] = {}  # job id -> providers whose result arrived
        self.events = 0
        self._at(START_MS + BLOCK_MS, self._block)

    # --- building ----------------------------------------------------------------------

    def key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.rng.randbytes(32))

    def add_requester(self, balance: int = 100_000_000, **kw: Any) -> Node:
        key = self.key()
        cfg = RequesterConfig(
            key=key,
            chain_id=CHAIN,
            reputation=self.ledger.reputation,
            rng=random.Random(self.rng.random()),
            claim_window_blocks=CLAIM_WINDOW,
            settle_margin_blocks=SETTLE_MARGIN,
            **kw,
        )
        node = Node(key, requester=Requester(cfg))
        self.ledger.mint(node.pub, balance)
        self.nodes.append(node)
        return node

    def add_provider(
        self, behaviour: str = "honest", *, run_ms: int = 400, reputation: int = 0, **kw: Any
    ) -> Node:
        key = self.key()
        kw.setdefault("capability_classes", (CLASS,))
        kw.setdefault("base_run_ms", run_ms)  # the provider's estimate matches its speed
        kw.setdefault("determinism_class", DETERMINISM)
        cfg = ProviderConfig(
            key=key,
            chain_id=CHAIN,
            claim_window_blocks=CLAIM_WINDOW,
            **kw,
        )
        node = Node(key, provider=Provider(cfg), behaviour=behaviour, run_ms=run_ms)
        self.ledger.good[node.pub] = reputation
        self.nodes.append(node)
        return node

    def providers(self) -> list[Node]:
        return [n for n in self.nodes if n.provider is not None]

    def spec(
        self,
        requester: Node,
        *,
        redundancy: int = 1,
        max_retries: int = 2,
        max_price: int = 10_000,
        deadline_ms: int = 20_000,
        bid_window_ms: int = 300,
        capability_class: str = CLASS,
        spot_check_permille: int = 0,
    ) -> JobSpec:
        deadline = self.now + deadline_ms
        expiry = self.height_at(deadline) + CLAIM_WINDOW + SETTLE_MARGIN + 3
        return JobSpec(
            requester=requester.pub,
            nonce=self.rng.randbytes(16),
            runtime="onnx",
            model_hash=self.rng.randbytes(32),
            model_size=2048,
            inputs=(InputRef(name="x", hash=self.rng.randbytes(32), size=512),),
            requirements=Requirements(
                device="cpu",
                execution_provider="CPUExecutionProvider",
                min_memory_mb=256,
                capability_class=capability_class,
            ),
            graph_opt_level="extended",
            threads=1,
            max_price=max_price,
            redundancy=redundancy,
            max_retries=max_retries,
            verification=VerificationPolicy(
                mode="exact", rtol_e9=0, atol_e9=0, spot_check_permille=spot_check_permille
            ),
            created_ms=self.now,
            bid_window_ms=bid_window_ms,
            deadline_ms=deadline,
            escrow_expiry_height=expiry,
        )

    def submit(
        self, requester: Node, spec: JobSpec, *, providers: list[Node] | None = None
    ) -> bytes:
        assert requester.requester is not None
        known = [p.pub for p in (self.providers() if providers is None else providers)]
        job_id, effects = requester.requester.submit(spec, self.now, providers=known)
        self.execute(requester, "requester", effects)
        return job_id

    def height_at(self, t: int) -> int:
        return (t - START_MS) // BLOCK_MS

    # --- faults ------------------------------------------------------------------------

    def go_offline(self, node: Node, at: int, back_at: int | None = None) -> None:
        def down() -> None:
            node.online = False
            node.back_at = back_at

        self._at(at, down)
        if back_at is not None:
            self._at(back_at, lambda: self._come_back(node))

    def _come_back(self, node: Node) -> None:
        """A restarted daemon catches up with the ledger before anything else."""
        node.online = True
        for job_id, e in sorted(self.ledger.escrows.items()):
            if node.requester is not None and e.owner == node.pub:
                fx = node.requester.escrow_locked(job_id, self.now)
                self.execute(node, "requester", fx)
                if e.status != "open":
                    self.execute(node, "requester", node.requester.escrow_closed(job_id, self.now))
            if node.provider is not None and node.pub in e.paid:
                fx = node.provider.paid(job_id, e.paid[node.pub], self.now)
                self.execute(node, "provider", fx)
            if node.provider is not None and e.status != "open":
                self.execute(node, "provider", node.provider.escrow_closed(job_id, self.now))
        if node.provider is not None:  # sandbox runs died with the process
            for job_id, work in sorted(node.provider.work.items()):
                if work.phase == "running":
                    usage = Usage(cpu_ms=0, wall_ms=0, peak_memory_kb=0, gpu_ms=0)
                    fx = node.provider.job_finished(
                        job_id, self.now, outcome="crashed", output=None, usage=usage
                    )
                    self.execute(node, "provider", fx)
        h = self.ledger.height
        if node.requester is not None:
            self.execute(node, "requester", node.requester.block(h, self.now))
        if node.provider is not None:
            self.execute(node, "provider", node.provider.block(h, self.now))

    # --- the loop ----------------------------------------------------------------------

    def _at(self, t: int, fn: Callable[[], None]) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (max(t, self.now), self.seq, fn))

    def run_until(self, t: int, max_events: int = 200_000) -> None:
        while self.queue and self.queue[0][0] <= t:
            at, _, fn = heapq.heappop(self.queue)
            self.now = at
            fn()
            self.events += 1
            assert self.events < max_events, "event budget exceeded: a loop that never settles"
        self.now = max(self.now, t)

    def run_jobs(self, job_ids: list[bytes], limit_ms: int = 120_000) -> None:
        """Run until every job's escrow is closed (or ``limit_ms`` of virtual time)."""
        end = self.now + limit_ms
        while self.now < end:
            self.run_until(self.now + BLOCK_MS)
            if all(
                self.ledger.escrows.get(j) is not None and self.ledger.escrows[j].status != "open"
                for j in job_ids
            ):
                return

    def _block(self) -> None:
        led = self.ledger
        led.height += 1
        pending, led.pending = led.pending, []
        notes: list[tuple[str, Any]] = []
        for sender, fx in pending:
            notes += led.apply(sender, fx)
        for kind, args in notes:
            self._notify(kind, args)
        for node in self.nodes:
            if not node.online:
                continue
            if node.requester is not None:
                self.execute(node, "requester", node.requester.block(led.height, self.now))
            if node.provider is not None:
                self.execute(node, "provider", node.provider.block(led.height, self.now))
        self._at(self.now + BLOCK_MS, self._block)

    def _notify(self, kind: str, args: Any) -> None:
        for node in self.nodes:
            if not node.online:
                continue
            if kind in ("escrow_locked", "escrow_failed") and node.pub == args[0]:
                assert node.requester is not None
                if kind == "escrow_locked":
                    fx = node.requester.escrow_locked(args[1], self.now)
                else:
                    fx = node.requester.escrow_failed(args[1], args[2], self.now)
                self.execute(node, "requester", fx)
            elif kind == "paid" and node.pub == args[0] and node.provider is not None:
                self.execute(node, "provider", node.provider.paid(args[1], args[2], self.now))
            elif kind == "closed":
                if node.requester is not None:
                    self.execute(node, "requester", node.requester.escrow_closed(args[0], self.now))
                if node.provider is not None:
                    self.execute(node, "provider", node.provider.escrow_closed(args[0], self.now))

    # --- carrying out effects ----------------------------------------------------------

    def machine(self, node: Node, role: str) -> Any:
        return node.requester if role == "requester" else node.provider

    def execute(self, node: Node, role: str, effects: list[Effect]) -> None:
        for fx in effects:
            if not node.online:
                return  # the process died in the middle: the rest never happened
            self._one(node, role, fx)
            if node.crash_after is not None and node.crash_after(fx):
                node.crash_after = None
                node.online = False

    def _one(self, node: Node, role: str, fx: Effect) -> None:
        if isinstance(fx, SetTimer):
            self.seq += 1
            token = self.seq
            node.timers[(role, fx.key)] = token
            self._at(fx.at_ms, lambda: self._fire(node, role, fx.key, token))
        elif isinstance(fx, CancelTimer):
            node.timers.pop((role, fx.key), None)
        elif isinstance(fx, Send):
            self._send(node, fx.peer, fx.message.raw, fx.message.message, None)
        elif isinstance(fx, Publish):
            for peer in self.nodes:
                serves = (
                    peer.provider is not None
                    and fx.topic in peer.provider.config.capability_classes
                )
                if peer is not node and serves:
                    self._send(node, peer.pub, fx.message.raw, fx.message.message, None)
        elif isinstance(fx, Deliver):
            sealed = seal(fx.peer, fx.output)
            self._send(node, fx.peer, fx.result.raw, fx.result.message, sealed)
        elif isinstance(fx, (LockEscrow, Settle, Refund, ClaimWithReceipt, Attest, Slash)):
            self.ledger.pending.append((node.pub, fx))
        elif isinstance(fx, RunJob):
            self._run(node, fx)
        elif isinstance(fx, AbortJob):
            pass  # the provider ignores a finish for a job it no longer runs
        elif isinstance(fx, NotifyUser):
            self.notes.append((node.pub, fx))
        elif isinstance(fx, JobDone):
            self.done[fx.job_id] = fx
        elif isinstance(fx, Misbehaved):
            self.misbehaved.append(fx)
        else:  # pragma: no cover - a new effect the harness does not know
            raise AssertionError(f"unhandled effect {fx!r}")

    def _fire(self, node: Node, role: str, key: TimerKey, token: int) -> None:
        if node.timers.get((role, key)) != token:
            return
        if not node.online:
            if node.back_at is not None:  # a restarted daemon fires overdue timers
                self._at(node.back_at, lambda: self._fire(node, role, key, token))
            return
        del node.timers[(role, key)]
        self.execute(node, role, self.machine(node, role).timer(key, self.now))

    def _send(self, src: Node, peer: bytes, raw: bytes, msg: Any, sealed: bytes | None) -> None:
        if self.rng.random() < self.loss:
            return
        dst = next((n for n in self.nodes if n.pub == peer), None)
        if dst is None:
            return
        delay = self.rng.randint(*self.latency)

        def arrive() -> None:
            if not dst.online:
                return
            if isinstance(msg, (JobSpec, Award, Receipt)):
                assert dst.provider is not None
                self.execute(dst, "provider", dst.provider.receive(raw, self.now))
                return
            assert dst.requester is not None
            output = None
            if sealed is not None:
                try:
                    output = open_sealed(dst.key, sealed, msg.output_hash)
                except SealError:
                    output = None
                if output is not None:
                    self.delivered.setdefault(msg.job_id, set()).add(msg.provider)
            self.execute(dst, "requester", dst.requester.receive(raw, self.now, output=output))

        self._at(self.now + delay, arrive)

    def _run(self, node: Node, fx: RunJob) -> None:
        spec = fx.job.message
        job_id = fx.job.id

        def finish() -> None:
            if not node.online:
                return
            assert node.provider is not None
            out = (
                honest_output(spec) if node.behaviour == "honest" else wrong_output(spec, node.pub)
            )
            out = replace(out, determinism_class=node.provider.config.determinism_class)
            usage = Usage(cpu_ms=node.run_ms, wall_ms=node.run_ms, peak_memory_kb=1024, gpu_ms=0)
            effects = node.provider.job_finished(
                job_id, self.now, outcome="ok", output=out, usage=usage
            )
            self.execute(node, "provider", effects)

        self._at(self.now + node.run_ms, finish)


def decode_any(raw: bytes) -> Any:
    return protocol.decode(raw, CHAIN, *protocol.ALL_MESSAGES).message
