"""A deterministic discrete-event harness for the marketplace machines.

Virtual time; a seeded message router with latency and loss; the real ledger (the pure
``ledger`` package: a coordinator makes a block every ``BLOCK_MS`` from the transactions the
nodes asked for since the last one, and every block is applied again, as a replica would,
and checked for conservation); and a fake sandbox whose output is a deterministic function
of the job (a cheater returns another).

Nothing here replaces a machine: the real Requester and Provider run unchanged, and their
ledger effects become transactions the way the daemon makes them (specs/daemon.md,
"Attestations and slash reports"): attestations go once their job's escrow is closed and
concern only the providers it paid (by the settle or by their claims); a verdict against
an unpaid provider, and a slash, go to the coordinator as a report, and the coordinator
slashes what the offender has staked.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, assert_never

import nacl.signing

import ledger
import protocol
import scheduler
from protocol import (
    Award,
    InputRef,
    JobSpec,
    Receipt,
    Requirements,
    Unseal,
    Usage,
    VerificationPolicy,
    content_hash,
)
from scheduler import (
    AbortJob,
    Attest,
    Canary,
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
    ReservePlace,
    RunJob,
    SealError,
    Send,
    SetTimer,
    Settle,
    Slash,
    TimerKey,
    WorkPhase,
    open_sealed,
    seal,
)

from ..keys import key, pub

CHAIN = "aimx-sim"
START_MS = 1_790_000_000_000
BLOCK_MS = 1_000
CLASS = "onnx.cpu.m4"
DETERMINISM = "ort-1.32.0/cpu/generic/extended"
CLAIM_WINDOW = 10
SETTLE_MARGIN = 2
#: A transaction is valid this many blocks after it is made (the daemon's lifetime).
TX_LIFETIME_BLOCKS = 30
#: Stake a coordinator takes from a reported cheat (at most what it has).
SLASH_AMOUNT = 5_000

Machine = Literal["requester", "provider"]
"""Which of a node's machines an effect came from (and its timers go to)."""


def honest_output(spec: JobSpec) -> Output:
    """What every honest sandbox computes for ``spec`` (a stand-in for running the model)."""
    data = b"out:" + content_hash(spec.model_hash + b"".join(i.hash for i in spec.inputs))
    return Output(data, commitment(data), DETERMINISM)


def commitment(data: bytes) -> bytes:
    """The simulated sandbox's output commitment of delivered bytes."""
    return content_hash(b"commit:" + data)


def wrong_output(spec: JobSpec, who: bytes) -> Output:
    """A cheater's output: cheap to make and wrong."""
    data = b"bad:" + content_hash(who + spec.model_hash)
    return Output(data, commitment(data), DETERMINISM)


def sealed_result(
    job_id: bytes,
    who: nacl.signing.SigningKey,
    replica: int,
    output: bytes,
    determinism_class: str = DETERMINISM,
) -> tuple[bytes, bytes, bytes]:
    """A provider's signed Result for ``output``, the output sealed as it travels with
    it, and the provider's signed Unseal that opens it."""
    key = protocol.output_key(who, job_id, replica, commitment(output))
    sealed = protocol.seal_output(key, output)
    res = protocol.Result(
        job_id=job_id,
        provider=bytes(who.verify_key),
        replica=replica,
        outcome="ok",
        message="",
        output_commitment=commitment(output),
        output_hash=content_hash(sealed),
        output_size=len(sealed),
        key_hash=protocol.key_hash(key),
        determinism_class=determinism_class,
        usage=Usage(cpu_ms=1, wall_ms=1, peak_memory_kb=1, gpu_ms=0),
        finished_ms=1,
    )
    raw = protocol.sign(res, who, CHAIN)
    unseal = Unseal(job_id, bytes(who.verify_key), replica, raw.id, key)
    return raw.raw, sealed, protocol.sign(unseal, who, CHAIN).raw


def reputation(state: ledger.State, who: bytes) -> Reputation:
    """What a requester knows of ``who`` from the ledger (the daemon's reading of it)."""
    return Reputation(*state.provider_record(who))


def opening_state(
    genesis: ledger.Genesis, accounts: Mapping[bytes, ledger.Account]
) -> ledger.State:
    """The chain at height 0 with ``accounts`` as a history left them (balances, stakes,
    reputation): the state's leaves (``ledger.State``'s layout), loaded as a store loads
    them. Everything held counts as minted, so credits are conserved from the start."""
    minted = sum(a.balance + a.stake for a in accounts.values())
    leaves = [(b"\x00", protocol.pack([0, minted, 0, 0]))]
    leaves += [(b"\x01" + account, a.encode()) for account, a in sorted(accounts.items())]
    return ledger.State.from_leaves(genesis, genesis.hash(), leaves)


# --- the ledger -------------------------------------------------------------------------


@dataclass(frozen=True)
class TxRequest:
    """A transaction a node asked for: its payload, signed when the block is made."""

    sender: nacl.signing.SigningKey
    payload: ledger.Payload
    #: Told why, when the ledger refuses the transaction.
    on_reject: Callable[[str], None] | None = None
    #: The transaction is never valid past this height (a lock: the escrow's own expiry).
    expiry_cap: int | None = None


class Chain:
    """The ledger as the simulated nodes see it: one coordinator, a block every ``BLOCK_MS``.

    Accounts are opened before the first block. Each block takes the transactions asked for
    since the last one, in order; each is signed with its sender's next sequence number and
    checked by the ledger's own rules, and a refused one is reported to its ``on_reject``
    and left out (so it leaves no gap in its sender's sequence).
    """

    def __init__(self) -> None:
        self.coordinator = key("coordinator")
        self.genesis = ledger.make_genesis(CHAIN, [pub(self.coordinator)])
        self.opening: dict[bytes, ledger.Account] = {}
        self._state: ledger.State | None = None
        self.pending: list[TxRequest] = []
        #: Every refused transaction: ``(kind, why)``.
        self.rejected: list[tuple[str, str]] = []

    @property
    def state(self) -> ledger.State:
        if self._state is None:
            self._state = opening_state(self.genesis, self.opening)
        return self._state

    @property
    def height(self) -> int:
        return self.state.height

    def open_account(self, account: bytes, *, balance: int, stake: int, settled_jobs: int) -> None:
        assert self._state is None, "open accounts before the chain starts"
        rep_s = settled_jobs * ledger.REP_UNIT
        self.opening[account] = ledger.Account(balance=balance, stake=stake, rep_s=rep_s)

    def escrow(self, job_id: bytes) -> ledger.Escrow | None:
        return self.state.escrow(job_id)

    def check_conservation(self) -> None:
        ledger.check_invariants(self.state)

    def submit(self, request: TxRequest) -> None:
        self.pending.append(request)

    def make_block(self) -> list[tuple[TxRequest, str]]:
        """Make the next block and apply it; returns the refused requests and why."""
        state = self.state
        height = state.height + 1
        draft = ledger.Draft(state, height)
        draft.mature()
        accepted: list[ledger.VerifiedTx] = []
        refused: list[tuple[TxRequest, str]] = []
        requests, self.pending = self.pending, []
        for request in requests:
            sender = request.sender
            expiry = height + TX_LIFETIME_BLOCKS
            if request.expiry_cap is not None:
                expiry = min(expiry, request.expiry_cap)
            seq = draft.account(pub(sender)).next_seq
            signed = ledger.tx.make(sender, CHAIN, seq, request.payload, expiry_height=expiry)
            verified = ledger.verify_tx(signed.raw, CHAIN)
            try:
                ledger.apply_tx(draft, verified)
            except ledger.TransactionRejected as exc:
                self.rejected.append((signed.message.kind, str(exc)))
                refused.append((request, str(exc)))
                continue
            accepted.append(verified)
        produced = ledger.produce_block(state, self.coordinator, accepted)
        assert not produced.rejected, produced.rejected
        # Applied again, as a replica would (the signatures were checked above): the rules
        # must reach the state root the producer named.
        self._state = ledger.apply_block(state, produced.block, verified=produced.included)
        ledger.check_invariants(self._state)
        return refused


# --- nodes and the loop -------------------------------------------------------------------


@dataclass
class Node:
    key: nacl.signing.SigningKey
    requester: Requester | None = None
    provider: Provider | None = None
    #: honest | cheat | liar (claims the right commitment) | collude (one shared wrong output)
    #: | zerocommit (a wrong output with an all-zero commitment)
    #: | withhold (honest result, but the output bytes never sent)
    #: | classlie (a wrong result whose Result names another determinism class)
    behaviour: str = "honest"
    online: bool = True
    back_at: int | None = None
    timers: dict[tuple[Machine, TimerKey], int] = field(default_factory=dict)
    crash_after: Callable[[Effect], bool] | None = None
    run_ms: int = 400
    #: Attestations waiting for their job's escrow to close.
    pending_attests: dict[bytes, list[Attest]] = field(default_factory=dict)
    #: Reports already sent to the coordinator: ``(offender, hash of the evidence)``.
    reported: set[tuple[bytes, bytes]] = field(default_factory=set)

    @property
    def pub(self) -> bytes:
        return pub(self.key)


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
        self.ledger = Chain()
        self.done: dict[bytes, JobDone] = {}
        self.notes: list[tuple[bytes, NotifyUser]] = []
        self.misbehaved: list[Misbehaved] = []
        #: Every attestation and slash the machines asked for.
        self.attests: list[Attest] = []
        self.slashes: list[Slash] = []
        self.delivered: dict[bytes, set[bytes]] = {}  # job id -> providers whose result arrived
        self.events = 0
        #: Whether providers' ``reserve`` transactions are submitted (off: every sealed
        #: receipt is redeemed by a claim, as before places could be reserved).
        self.reserves = True
        self._key_numbers = itertools.count(1)
        self._at(START_MS + BLOCK_MS, self._block)

    # --- building ----------------------------------------------------------------------

    def key(self) -> nacl.signing.SigningKey:
        """A key no other node of this simulation has."""
        return key(next(self._key_numbers))

    def reputation(self, who: bytes) -> Reputation:
        return reputation(self.ledger.state, who)

    def _escrow(self, job_id: bytes) -> ledger.Escrow | None:
        return self.ledger.state.escrow(job_id)

    def add_requester(self, balance: int = 100_000_000, **kw: Any) -> Node:
        signing_key = self.key()
        cfg = RequesterConfig(
            key=signing_key,
            chain_id=CHAIN,
            commitment=commitment,
            reputation=self.reputation,
            rng=random.Random(self.rng.random()),
            claim_window_blocks=CLAIM_WINDOW,
            settle_margin_blocks=SETTLE_MARGIN,
            **kw,
        )
        node = Node(signing_key, requester=Requester(cfg))
        self.ledger.open_account(node.pub, balance=balance, stake=0, settled_jobs=0)
        self.nodes.append(node)
        return node

    def add_provider(
        self,
        behaviour: str = "honest",
        *,
        run_ms: int = 400,
        reputation: int = 0,
        stake: int = 0,
        **kw: Any,
    ) -> Node:
        """A provider with ``reputation`` settled jobs behind it and ``stake`` staked."""
        signing_key = self.key()
        kw.setdefault("capability_classes", (CLASS,))
        kw.setdefault("base_run_ms", run_ms)  # the provider's estimate matches its speed
        kw.setdefault("determinism_class", DETERMINISM)
        cfg = ProviderConfig(
            key=signing_key,
            chain_id=CHAIN,
            claim_window_blocks=CLAIM_WINDOW,
            escrow_of=self._escrow,
            **kw,
        )
        node = Node(signing_key, provider=Provider(cfg), behaviour=behaviour, run_ms=run_ms)
        self.ledger.open_account(node.pub, balance=0, stake=stake, settled_jobs=reputation)
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
        """A restarted daemon's sandbox runs died with it; then it catches up with the
        ledger before anything else."""
        node.online = True
        if node.provider is not None:
            for job_id, work in sorted(node.provider.work.items()):
                if work.phase == WorkPhase.RUNNING:
                    usage = Usage(cpu_ms=0, wall_ms=0, peak_memory_kb=0, gpu_ms=0)
                    fx = node.provider.job_finished(
                        job_id, self.now, outcome="crashed", output=None, usage=usage
                    )
                    self.execute(node, "provider", fx)
        self._follow_ledger(node)

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
        """Run until every job's escrow is closed (or ``limit_ms`` of virtual time), and
        the transactions its closing brought (attestations, slashes) are in a block."""
        end = self.now + limit_ms
        while self.now < end:
            self.run_until(self.now + BLOCK_MS)
            escrows = [self.ledger.escrow(j) for j in job_ids]
            waiting = any(j in n.pending_attests for n in self.nodes for j in job_ids)
            if all(e is not None and not e.is_open for e in escrows) and not waiting:
                if self.ledger.pending:
                    self.run_until(self.now + BLOCK_MS)
                return

    def _block(self) -> None:
        for request, why in self.ledger.make_block():
            if request.on_reject is not None:
                request.on_reject(why)
        for node in self.nodes:
            for job_id in list(node.pending_attests):
                escrow = self.ledger.escrow(job_id)
                if escrow is not None and not escrow.is_open:
                    # as the daemon: what concerns a provider that may still claim its
                    # reserved price waits until it is paid or the escrow is final
                    job = node.requester.jobs.get(job_id) if node.requester else None
                    later = scheduler.still_payable(job, escrow, self.ledger.height)
                    attests = node.pending_attests.pop(job_id)
                    if later:
                        node.pending_attests[job_id] = [a for a in attests if a.subject in later]
                    self._attest_closed(
                        node, escrow, [a for a in attests if a.subject not in later]
                    )
        for node in self.nodes:
            if node.online:
                self._follow_ledger(node)
        self._at(self.now + BLOCK_MS, self._block)

    def _follow_ledger(self, node: Node) -> None:
        """Tell a node's machines about the latest block, as the daemon does."""
        state = self.ledger.state
        if node.requester is not None:
            fx = node.requester.follow_ledger(state.height, state.escrow, self.now)
            self.execute(node, "requester", fx)
        if node.provider is not None:
            fx = node.provider.follow_ledger(state.height, state.escrow, self.now)
            self.execute(node, "provider", fx)

    # --- carrying out effects ----------------------------------------------------------

    def machine(self, node: Node, role: Machine) -> Requester | Provider:
        machine = node.requester if role == "requester" else node.provider
        assert machine is not None
        return machine

    def execute(self, node: Node, role: Machine, effects: list[Effect]) -> None:
        for fx in effects:
            if not node.online:
                return  # the process died in the middle: the rest never happened
            self._carry_out(node, role, fx)
            if node.crash_after is not None and node.crash_after(fx):
                node.crash_after = None
                node.online = False

    def _carry_out(self, node: Node, role: Machine, fx: Effect) -> None:
        match fx:
            case SetTimer():
                self.seq += 1
                token = self.seq
                node.timers[(role, fx.key)] = token
                self._at(fx.at_ms, lambda: self._fire(node, role, fx.key, token))
            case CancelTimer():
                node.timers.pop((role, fx.key), None)
            case Send():
                if node.behaviour == "withhold" and isinstance(fx.message.message, Unseal):
                    return  # takes the receipt, never sends the key
                self._send(node, fx.peer, fx.message.raw, fx.message.message, None)
            case Publish():
                for peer in self.nodes:
                    serves = (
                        peer.provider is not None
                        and fx.topic in peer.provider.config.capability_classes
                    )
                    if peer is not node and serves:
                        self._send(node, peer.pub, fx.message.raw, fx.message.message, None)
            case Deliver():
                sealed = seal(fx.peer, fx.output) if fx.output else None
                self._send(node, fx.peer, fx.result.raw, fx.result.message, sealed)
            case LockEscrow():
                self._lock(node, fx)
            case ReservePlace():
                if self.reserves:
                    reserve = ledger.Reserve(fx.job_id, fx.award.raw)
                    self.ledger.submit(TxRequest(node.key, reserve))
            case Settle():
                self._settle(node, fx)
            case Refund():
                self.ledger.submit(TxRequest(node.key, ledger.Refund(fx.job_id)))
            case ClaimWithReceipt():
                if node.behaviour == "withhold" and fx.key:
                    return  # a claim with a sealed receipt would publish the key
                claim = ledger.Claim(fx.job_id, fx.award.raw, fx.receipt.raw, fx.key)
                self.ledger.submit(TxRequest(node.key, claim))
            case Attest():
                self.attests.append(fx)
                self._attest(node, fx)
            case Slash():
                # Reported with its attestation once the escrow is closed, as the daemon.
                self.slashes.append(fx)
            case RunJob():
                self._run(node, fx)
            case AbortJob():
                pass  # the provider ignores a finish for a job it no longer runs
            case NotifyUser():
                self.notes.append((node.pub, fx))
            case JobDone():
                self.done[fx.job_id] = fx
            case Misbehaved():
                self.misbehaved.append(fx)
            case _:
                assert_never(fx)

    def _lock(self, node: Node, fx: LockEscrow) -> None:
        def refused(why: str) -> None:
            assert node.requester is not None
            if node.online:
                effects = node.requester.escrow_failed(fx.job_id, why, self.now)
                self.execute(node, "requester", effects)

        payload = ledger.Lock(
            fx.job_id,
            fx.amount,
            fx.claim_height,
            fx.expiry_height,
            fx.max_per_payee,
            fx.max_payees,
            fx.spec,
        )
        self.ledger.submit(TxRequest(node.key, payload, refused, expiry_cap=fx.expiry_height))

    def _settle(self, node: Node, fx: Settle) -> None:
        payouts = fx.as_dict()
        bids = fx.bids()
        items = tuple(ledger.Payout(p, a, bids[p]) for p, a in sorted(payouts.items()))
        self.ledger.submit(TxRequest(node.key, ledger.Settle(fx.job_id, items)))

    def _attest(self, node: Node, fx: Attest) -> None:
        """Kept until the job's escrow is closed (``_attest_closed``)."""
        node.pending_attests.setdefault(fx.job_id, []).append(fx)

    def _attest_closed(self, node: Node, escrow: ledger.Escrow, attests: list[Attest]) -> None:
        """The job's escrow closed: attestations about the providers it paid, by the
        settle or by their claims; a verdict against one it did not pay goes to the
        coordinator with the provider's own signed results."""
        paid = {p for p, _ in escrow.paid}
        done: set[bytes] = set()
        for fx in attests:
            if fx.subject in paid:
                if fx.subject not in done:  # one attestation per party and job
                    done.add(fx.subject)
                    attest = ledger.Attest(fx.job_id, fx.subject, int(fx.positive))
                    self.ledger.submit(TxRequest(node.key, attest))
            elif fx.report and not fx.positive and any(e.signer == fx.subject for e in fx.evidence):
                self._report(node, fx.subject, [e.raw for e in fx.evidence])

    def _report(self, node: Node, offender: bytes, evidence: list[bytes]) -> None:
        """The coordinator slashes a reported provider what it has staked, up to
        ``SLASH_AMOUNT``; a report without the offender's signed results is not sent."""
        report = (offender, content_hash(b"".join(evidence)))
        if not evidence or report in node.reported:
            return
        node.reported.add(report)
        state = self.ledger.state
        account = state.account(offender)
        amount = min(account.stake + account.unbonding_total, SLASH_AMOUNT)
        results = [protocol.decode(e, CHAIN, protocol.Result).message for e in evidence[:4]]
        escrow = state.escrow(results[0].job_id)
        if amount > 0 and escrow is not None:
            # the witnesses of the coordinator's choice (node/daemon/reports.py)
            chosen = ledger.strongest_witnesses(
                state, escrow, offender, evidence[:4], results, released_after=state.height + 4
            )
            slash = ledger.Slash(offender, amount, "failed_verification", tuple(chosen))
            self.ledger.submit(TxRequest(self.ledger.coordinator, slash))

    def _fire(self, node: Node, role: Machine, key: TimerKey, token: int) -> None:
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
            if node.behaviour == "honest":
                out = honest_output(spec)
            elif node.behaviour == "liar":  # the right commitment, corrupted bytes
                out = replace(honest_output(spec), data=wrong_output(spec, node.pub).data)
            elif node.behaviour == "collude":  # every colluder returns the same wrong output
                out = wrong_output(spec, b"colluders")
            elif node.behaviour.startswith("cheat@"):  # wrong with probability cheat@<rate>
                rate = float(node.behaviour.removeprefix("cheat@"))
                wrong = self.rng.random() < rate
                out = wrong_output(spec, node.pub) if wrong else honest_output(spec)
            elif node.behaviour == "spotwise":  # wrong only where the job asks for spot checks
                checked = spec.verification.spot_check_permille > 0
                out = wrong_output(spec, node.pub) if checked else honest_output(spec)
            else:
                out = wrong_output(spec, node.pub)
            out = replace(out, determinism_class=node.provider.config.determinism_class)
            if node.behaviour == "classlie":  # a wrong output said to be from another class
                out = replace(out, determinism_class="other/class")
            if node.behaviour == "zerocommit":  # a wrong output committing to nothing
                out = replace(out, commitment=bytes(32))
            usage = Usage(cpu_ms=node.run_ms, wall_ms=node.run_ms, peak_memory_kb=1024, gpu_ms=0)
            effects = node.provider.job_finished(
                job_id, self.now, outcome="ok", output=out, usage=usage
            )
            self.execute(node, "provider", effects)

        self._at(self.now + node.run_ms, finish)


def known_answer(sim: Sim) -> Canary:
    """A canary whose answer is what an honest sandbox computes for its model and inputs."""
    probe = sim.spec(sim.add_requester())
    return Canary(
        runtime="onnx",
        model_hash=probe.model_hash,
        model_size=probe.model_size,
        inputs=probe.inputs,
        answer=honest_output(probe),
    )


def spot_checked(sim: Sim, behaviour: str) -> tuple[Node, bytes]:
    """A requester with one canary submits a one-replica job asking for spot checks, which
    a staked, established provider of ``behaviour`` alone bids for; the job and its canary
    run to the end. The provider, and the canary's job id."""
    req = sim.add_requester(canaries=(known_answer(sim),))
    provider = sim.add_provider(behaviour, price_floor=100, reputation=5, stake=SLASH_AMOUNT)
    job = sim.submit(req, sim.spec(req, redundancy=1, max_retries=0, spot_check_permille=1000))
    assert req.requester is not None
    checks = [j for j, jb in req.requester.jobs.items() if jb.spot_check]
    assert len(checks) == 1
    sim.run_jobs([job, *checks])
    return provider, checks[0]
