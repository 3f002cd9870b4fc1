"""Review round 71: the provider's delivered work. A requester that never receipts chose
how long a provider held each delivered output (to the escrow's expiry, days) and how
long it resent it (every minute to the job's deadline), with nothing bounding how many
(F1); an escrow expiring before a tolerance job's deadline left a plain receipt never
claimed (F2); an unclaimable sealed receipt closed the work, and the job, announced again,
ran again on one escrow, any number of times (F3).

The real :class:`Provider` against the real pure ledger (``_harness.Chain``), the
attacker requester driven by hand."""

from __future__ import annotations

import dataclasses
import heapq
from dataclasses import dataclass, field
from typing import TypeVar

import pytest
from nacl.signing import SigningKey

import ledger
import protocol
from protocol import (
    Award,
    Bid,
    InputRef,
    JobSpec,
    Receipt,
    Requirements,
    Signed,
    Unseal,
    Usage,
    VerificationPolicy,
)
from scheduler import (
    ClaimWithReceipt,
    Deliver,
    Effect,
    Misbehaved,
    NotifyUser,
    Output,
    Provider,
    ProviderConfig,
    RunJob,
    Send,
    SetTimer,
    TimerKey,
    WorkPhase,
)
from scheduler import _provider_delivered as delivered
from scheduler._provider import RESERVE_WAIT_BLOCKS
from scheduler._provider_delivered import (
    MAX_OUTPUT_RESENDS,
    MAX_UNRECEIPTED_PER_REQUESTER,
    UNRECEIPTED_AFTER_MS,
    UNRECEIPTED_GRACE_MS,
)

from ..keys import key, pub
from ._harness import CHAIN, CLASS, DETERMINISM, START_MS, Chain, TxRequest, commitment

BLOCK_MS = 500
M = TypeVar("M", bound=protocol.Message)
USAGE = Usage(cpu_ms=1, wall_ms=1, peak_memory_kb=1, gpu_ms=0)


def _spec(
    who: SigningKey,
    n: int,
    now: int,
    *,
    deadline_ms: int,
    expiry: int,
    mode: str = "exact",
) -> Signed[JobSpec]:
    exact = mode == "exact"
    s = JobSpec(
        requester=pub(who),
        nonce=n.to_bytes(16, "big"),
        runtime="onnx",
        model_hash=bytes(32),
        model_size=2048,
        inputs=(InputRef(name="x", hash=bytes(32), size=512),),
        requirements=Requirements(
            device="cpu",
            execution_provider="CPUExecutionProvider",
            min_memory_mb=256,
            capability_class=CLASS,
        ),
        graph_opt_level="extended",
        threads=1,
        max_price=10_000,
        redundancy=1,
        max_retries=2,
        verification=VerificationPolicy(
            mode=mode,
            rtol_e9=0 if exact else 1000,
            atol_e9=0 if exact else 1000,
            spot_check_permille=0,
        ),
        created_ms=now,
        bid_window_ms=300,
        deadline_ms=deadline_ms,
        escrow_expiry_height=expiry,
    )
    return protocol.sign(s, who, CHAIN)


@dataclass
class _World:
    """One provider, a few requester keys, the real ledger; timers kept in a heap."""

    requesters: list[SigningKey] = field(default_factory=list)
    tolerance: bool = False
    chain: Chain = field(default_factory=Chain)
    timers: list[tuple[int, int, TimerKey]] = field(default_factory=list)
    claims: list[ClaimWithReceipt] = field(default_factory=list)
    n: int = 0

    def __post_init__(self) -> None:
        self.chain.open_account(pub(key("r71 provider")), balance=0, stake=0, settled_jobs=0)
        for who in self.requesters:
            self.chain.open_account(pub(who), balance=10**9, stake=0, settled_jobs=0)
        self.p = Provider(
            ProviderConfig(
                key=key("r71 provider"),
                chain_id=CHAIN,
                capability_classes=(CLASS,),
                claim_window_blocks=10,
                escrow_of=self.chain.escrow,
                determinism_class=DETERMINISM,
                base_run_ms=400,
                max_concurrency=2,
                tolerance_jobs=self.tolerance,
            )
        )
        self.block()

    def now(self) -> int:
        return START_MS + self.chain.height * BLOCK_MS

    def take(self, effects: list[Effect]) -> list[Effect]:
        for e in effects:
            if isinstance(e, SetTimer):
                self.n += 1
                heapq.heappush(self.timers, (e.at_ms, self.n, e.key))
            if isinstance(e, ClaimWithReceipt):
                self.claims.append(e)
        return effects

    def block(self) -> list[Effect]:
        self.chain.make_block()
        return self.take(self.p.follow_ledger(self.chain.height, self.chain.escrow, self.now()))

    def announce(
        self, who: SigningKey, *, deadline_ms: int, expiry: int, mode: str = "exact"
    ) -> tuple[Signed[JobSpec], Signed[Bid]]:
        self.n += 1
        spec = _spec(who, self.n, self.now(), deadline_ms=deadline_ms, expiry=expiry, mode=mode)
        bid = _sent(self.take(self.p.receive(spec.raw, self.now())), Bid)
        s = spec.message
        price = bid.message.price
        lock = ledger.Lock(spec.id, price, expiry - 20, expiry, price, 1, spec.raw)
        self.chain.submit(TxRequest(who, lock))
        self.block()
        assert s.escrow_expiry_height == expiry
        return spec, bid

    def award(self, who: SigningKey, spec: Signed[JobSpec], bid: Signed[Bid]) -> list[Effect]:
        award = Award(
            job_id=spec.id,
            requester=pub(who),
            provider=bid.message.provider,
            replica=0,
            price=bid.message.price,
            deadline_ms=self.now() + 60_000,
            bid_hash=bid.id,
        )
        return self.take(self.p.receive(protocol.sign(award, who, CHAIN).raw, self.now()))

    def run(self, spec: Signed[JobSpec], out: bytes) -> Deliver:
        fx = self.p.job_finished(
            spec.id,
            self.now() + 100,
            outcome="ok",
            output=Output(out, commitment(out), DETERMINISM),
            usage=USAGE,
        )
        return next(e for e in self.take(fx) if isinstance(e, Deliver))

    def receipt(
        self,
        who: SigningKey,
        spec: Signed[JobSpec],
        d: Deliver,
        *,
        sealed: bool,
        claim_by: int = 0,
    ) -> list[Effect]:
        rc = self.receipt_for(who, spec, d, sealed=sealed, claim_by=claim_by)
        return self.take(self.p.receive(protocol.sign(rc, who, CHAIN).raw, self.now()))

    def receipt_for(
        self, who: SigningKey, spec: Signed[JobSpec], d: Deliver, *, sealed: bool, claim_by: int
    ) -> Receipt:
        """The receipt an honest requester ``who`` signs for the delivery ``d``."""
        res = d.result
        return Receipt(
            job_id=spec.id,
            requester=pub(who),
            provider=self.p.me,
            replica=0,
            result_hash=res.id,
            output_commitment=res.message.output_commitment,
            key_hash=res.message.key_hash,
            at_once=int(sealed),
            claim_by=claim_by,
            received_ms=self.now(),
        )

    def timers_until(self, end_ms: int) -> list[Effect]:
        """Fire every timer due up to ``end_ms`` (blocks do not advance meanwhile); a
        machine that keeps setting a timer for the same moment fails the test (bounded)."""
        fired: list[Effect] = []
        for _ in range(10_000):
            if not self.timers or self.timers[0][0] > end_ms:
                return fired
            at, _, timer = heapq.heappop(self.timers)
            fired += self.take(self.p.timer(timer, at))
        raise AssertionError("the timers never settled: one is set again and again")


def _sent(effects: list[Effect], kind: type[M]) -> Signed[M]:
    found = [
        e.message for e in effects if isinstance(e, Send) and isinstance(e.message.message, kind)
    ]
    assert found, effects
    return found[0]  # type: ignore[return-value]


def test_a_silent_requester_gets_a_few_resends_and_its_work_ends_after_the_deadline() -> None:
    # F1: 24 h deadline, expiry far ahead, no receipt ever. Resent every minute all day
    # long, held to the escrow's expiry: now a few resends, bytes dropped, the work gone
    # a grace after the deadline.
    attacker = key("r71 attacker")
    w = _World([attacker])
    deadline = w.now() + 24 * 3_600_000
    spec, bid = w.announce(attacker, deadline_ms=deadline, expiry=w.chain.height + 1_000_000)
    assert any(isinstance(e, RunJob) for e in w.award(attacker, spec, bid))
    w.run(spec, b"x" * 4096)
    work = w.p.work[spec.id]
    assert work.phase == WorkPhase.DELIVERED and work.sealed
    fired = w.timers_until(deadline - 1)
    assert 0 < sum(isinstance(e, Deliver) for e in fired) <= MAX_OUTPUT_RESENDS
    assert spec.id in w.p.work and not work.sealed  # kept (a receipt may come), bytes dropped
    w.timers_until(deadline + UNRECEIPTED_GRACE_MS)
    assert spec.id not in w.p.work and work.end == "no receipt by the job's deadline"


def test_a_requester_with_many_deliveries_unreceipted_has_its_next_award_declined() -> None:
    # F1: nothing bounded how many delivered, unreceipted jobs one requester made a
    # provider hold; an honest requester is still served meanwhile. Only deliveries older
    # than a minute count: an honest requester receipts at its verdict, once its slowest
    # replica is in, and counted at once its awards were declined (round 72, R72-1).
    attacker, honest = key("r71 attacker"), key("r71 honest")
    w = _World([attacker, honest])
    deadline, expiry = w.now() + 3_600_000, w.chain.height + 100_000
    for i in range(MAX_UNRECEIPTED_PER_REQUESTER + 8):  # within a minute: all run
        spec, bid = w.announce(attacker, deadline_ms=deadline, expiry=expiry)
        assert any(isinstance(e, RunJob) for e in w.award(attacker, spec, bid)), i
        w.run(spec, b"%d" % i)
    for _ in range(UNRECEIPTED_AFTER_MS // BLOCK_MS):  # a minute on, none receipted
        w.block()
    spec, bid = w.announce(attacker, deadline_ms=deadline, expiry=expiry)
    declined = w.award(attacker, spec, bid)
    assert not any(isinstance(e, RunJob) for e in declined)
    nobid = _sent(declined, protocol.NoBid).message
    assert nobid.reason == "busy" and "await your receipt" in nobid.detail
    spec, bid = w.announce(honest, deadline_ms=deadline, expiry=expiry)
    assert any(isinstance(e, RunJob) for e in w.award(honest, spec, bid))


def test_a_requester_that_receipts_its_deliveries_is_never_declined_for_them() -> None:
    # The bound counts deliveries awaiting a receipt only: receipted ones leave it (and
    # their sealed bytes go), however many and however long ago.
    honest = key("r71 receipting")
    w = _World([honest])
    deadline, expiry = w.now() + 3_600_000, w.chain.height + 100_000
    for i in range(MAX_UNRECEIPTED_PER_REQUESTER + 8):
        spec, bid = w.announce(honest, deadline_ms=deadline, expiry=expiry)
        assert any(isinstance(e, RunJob) for e in w.award(honest, spec, bid)), i
        d = w.run(spec, b"%d" % i)
        w.receipt(honest, spec, d, sealed=True, claim_by=w.p.height + 4)
        # receipted (its claim, or its place's reservation, awaited): its bytes are gone
        work = w.p.work[spec.id]
        assert work.phase in (WorkPhase.RECEIPTED, WorkPhase.CLAIMED) and not work.sealed
    for _ in range(UNRECEIPTED_AFTER_MS // BLOCK_MS):
        w.block()
    spec, bid = w.announce(honest, deadline_ms=deadline, expiry=expiry)
    assert any(isinstance(e, RunJob) for e in w.award(honest, spec, bid))
    assert w.p._held_bytes == 0


def test_sealed_bytes_held_for_resends_stay_within_their_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # F1: 64 jobs of 1 MiB outputs held 64 MiB until the escrows' expiry.
    monkeypatch.setattr(delivered, "MAX_HELD_OUTPUT_BYTES", 3 * 4096)
    keys = [key(f"r71 attacker {i}") for i in range(6)]
    w = _World(keys)
    specs = []
    for k in keys:
        spec, bid = w.announce(k, deadline_ms=w.now() + 3_600_000, expiry=w.chain.height + 5_000)
        w.award(k, spec, bid)
        w.run(spec, bytes([len(specs)]) * 4000)
        specs.append(spec)
    held = [len(w.p.work[s.id].sealed) for s in specs]
    assert sum(held) <= 3 * 4096 and all(held[-3:])  # the newest kept, the oldest dropped
    assert all(w.p.work[s.id].phase == WorkPhase.DELIVERED for s in specs)


def test_a_tolerance_receipt_is_claimed_when_the_escrow_expires_before_the_deadline() -> None:
    # F2: the key went at once; the claim waited for the deadline, which came after the
    # escrow's expiry: the requester read the output and refunded everything.
    attacker = key("r71 tolerance")
    w = _World([attacker], tolerance=True)
    expiry = w.chain.height + 40
    spec, bid = w.announce(
        attacker, deadline_ms=w.now() + 3_600_000, expiry=expiry, mode="tolerance"
    )
    w.award(attacker, spec, bid)
    d = w.run(spec, b"the provider's real output " * 100)
    assert _sent(w.receipt(attacker, spec, d, sealed=False), Unseal)  # the key goes at once
    while w.chain.height < expiry - 1 and not w.claims:
        w.block()
    assert w.claims, "no claim in the claim window"
    claim = w.claims[0]
    payload = ledger.Claim(spec.id, claim.award.raw, claim.receipt.raw, claim.key)
    w.chain.submit(TxRequest(key("r71 provider"), payload))
    w.chain.make_block()
    escrow = w.chain.escrow(spec.id)
    assert escrow is not None and escrow.paid_to(w.p.me) == bid.message.price


def test_an_unclaimable_sealed_receipt_does_not_let_one_escrow_buy_the_job_again() -> None:
    # F3: the receipt closed the work; announced again, the job was bid on, awarded
    # (replica 0 again) and run again: 10 unpaid runs on one escrow.
    attacker = key("r71 rerun")
    w = _World([attacker])
    spec, bid = w.announce(
        attacker, deadline_ms=w.now() + 3_600_000, expiry=w.chain.height + 20_000
    )
    w.award(attacker, spec, bid)
    d = w.run(spec, b"run 0")
    fx = w.receipt(attacker, spec, d, sealed=True, claim_by=w.p.height)
    assert not any(isinstance(e, ClaimWithReceipt) for e in fx)
    assert w.p.work[spec.id].phase == WorkPhase.DELIVERED
    w.block()
    w.block()  # past the bid window
    again = w.take(w.p.receive(spec.raw, w.now()))
    assert not any(isinstance(e, Send) for e in again)  # no bid: the job is held
    assert not any(isinstance(e, NotifyUser) and e.event == "closed" for e in fx)


def test_a_receipt_that_is_not_for_our_result_is_misbehaviour_and_claims_nothing() -> None:
    # Pins on_receipt's match (the mutation run of this session): each field of the
    # receipt must be our result's, else the requester misbehaved and nothing is claimed.
    requester = key("r71 receipt fields")
    w = _World([requester])
    spec, bid = w.announce(requester, deadline_ms=w.now() + 3_600_000, expiry=w.chain.height + 500)
    w.award(requester, spec, bid)
    d = w.run(spec, b"ours")
    good = w.receipt_for(requester, spec, d, sealed=True, claim_by=w.p.height + 4)
    for wrong in (
        {"result_hash": bytes(32)},
        {"key_hash": bytes(32)},
        {"replica": 1},
        {"provider": pub(requester)},
    ):
        receipt = dataclasses.replace(good, **wrong)
        fx = w.take(w.p.receive(protocol.sign(receipt, requester, CHAIN).raw, w.now()))
        assert any(isinstance(e, Misbehaved) for e in fx), wrong
        assert not w.claims and w.p.work[spec.id].phase == WorkPhase.DELIVERED
    # a receipt for a job we do not hold, or before we delivered, is ignored
    other, _ = w.announce(requester, deadline_ms=w.now() + 3_600_000, expiry=w.chain.height + 500)
    early = dataclasses.replace(good, job_id=other.id)
    assert w.p.receive(protocol.sign(early, requester, CHAIN).raw, w.now()) == []
    unknown = dataclasses.replace(good, job_id=bytes(32))
    assert w.p.receive(protocol.sign(unknown, requester, CHAIN).raw, w.now()) == []
    fx = w.take(w.p.receive(protocol.sign(good, requester, CHAIN).raw, w.now()))
    for _ in range(RESERVE_WAIT_BLOCKS):  # no place reserved for us: then we claim
        w.block()
    assert w.claims and w.p.work[spec.id].phase == WorkPhase.CLAIMED
