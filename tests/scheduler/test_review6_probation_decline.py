"""Round-4 review finding R4-6: probation lasted only while the established replica lived.

An established provider and a sybil were awarded an exact job; a sybil requester filled
the established provider's one slot with a funded job of its own first, so it declined the
victim's award (a signed NoBid ``busy``); the replacement went to the next newcomer, and
the two sybils' matching wrong output was verified and paid. Now, once an established
provider was awarded a replica, only an agreement holding an established provider's
output decides the job: its replacement is another established bid (held, or from a
re-announcement) and, with none, the job ends without a verdict and nobody is paid
(``unverified`` when the newcomers' output was opened anyway). A job no established
provider ever bid on is decided by newcomers, as before (the admitted limit).
"""

from __future__ import annotations

import hashlib

import protocol
import scheduler
from protocol import (
    Bid,
    InputRef,
    JobSpec,
    NoBid,
    Receipt,
    Requirements,
    Result,
    Unseal,
    Usage,
    VerificationPolicy,
    content_hash,
    key_hash,
    seal_output,
    sign,
)
from scheduler import (
    Effect,
    Refund,
    Requester,
    RequesterConfig,
    Send,
    Settle,
    TimerKey,
    TimerKind,
)
from scheduler._pricing import NEWCOMER, Reputation

from ..keys import key, pub
from ._harness import Node, Sim, honest_output

# --- the review's case, message by message (its script, /tmp/h24w/v4_probation_decline.py)

CHAIN = "review6-decline"
HONEST = "ort-1.32.0/cpu/avx2/extended"
WRONG = b"WRONG" * 20
VETERAN = Reputation(score_permille=950, settled_jobs=50, stake=10**6)


def _commit(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def _spec(requester: bytes) -> JobSpec:
    return JobSpec(
        requester=requester,
        nonce=(11).to_bytes(16, "big"),
        runtime="onnx",
        model_hash=bytes([0x22]) * 32,
        model_size=2048,
        inputs=(InputRef(name="x", hash=bytes([0x33]) * 32, size=512),),
        requirements=Requirements(
            device="cpu",
            execution_provider="CPUExecutionProvider",
            min_memory_mb=512,
            capability_class="onnx.cpu.m8",
        ),
        graph_opt_level="extended",
        threads=1,
        max_price=5_000,
        redundancy=2,
        max_retries=3,
        verification=VerificationPolicy(mode="exact", rtol_e9=0, atol_e9=0, spot_check_permille=0),
        created_ms=0,
        bid_window_ms=1_000,
        deadline_ms=60_000,
        escrow_expiry_height=500,
    )


class _Review:
    """The victim's real Requester; the veteran and three sybils answer by hand."""

    def __init__(self) -> None:
        self.keys = {n: key(f"review6-{n}") for n in ("veteran", "sybil1", "sybil2", "sybil3")}
        self.who = {pub(k): n for n, k in self.keys.items()}
        self.req_key = key("review6-requester")
        self.req = Requester(
            RequesterConfig(
                key=self.req_key,
                chain_id=CHAIN,
                commitment=_commit,
                reputation=lambda p: VETERAN if self.who.get(p) == "veteran" else NEWCOMER,
            )
        )
        self.req.block(10, 0)
        named = [pub(k) for k in self.keys.values()]
        self.job_id, _ = self.req.submit(_spec(pub(self.req_key)), 0, providers=named)
        self.effects: list[Effect] = list(self.req.escrow_locked(self.job_id, 5))
        self.awards: dict[str, protocol.Award] = {}

    def _take(self, effects: list[Effect]) -> list[str]:
        self.effects += effects
        new = []
        for e in effects:
            if isinstance(e, Send) and isinstance(e.message.message, protocol.Award):
                name = self.who[e.message.message.provider]
                self.awards[name] = e.message.message
                new.append(name)
        return sorted(new)

    def bid(self, name: str, price: int, now_ms: int) -> list[str]:
        offer = Bid(
            job_id=self.job_id,
            provider=pub(self.keys[name]),
            price=price,
            est_finish_ms=5_000,
            determinism_class=HONEST,
            bench_score=1000,
            expires_ms=60_000,
        )
        return self._take(self.req.receive(sign(offer, self.keys[name], CHAIN).raw, now_ms))

    def decline(self, name: str, now_ms: int) -> list[str]:
        """The provider's slot was filled meanwhile: its signed NoBid ``busy``."""
        nobid = NoBid(self.job_id, pub(self.keys[name]), "busy", "slot taken meanwhile", 1)
        return self._take(self.req.receive(sign(nobid, self.keys[name], CHAIN).raw, now_ms))

    def deliver_wrong(self, name: str, now_ms: int) -> None:
        """A sybil's wrong output, its key handed over at once (no receipt awaited)."""
        k = self.keys[name]
        seal_key = bytes([k.verify_key.encode()[0]]) * 32
        sealed = seal_output(seal_key, WRONG)
        result = Result(
            job_id=self.job_id,
            provider=pub(k),
            replica=self.awards[name].replica,
            outcome="ok",
            message="",
            output_commitment=_commit(WRONG),
            output_hash=content_hash(sealed),
            output_size=len(sealed),
            key_hash=key_hash(seal_key),
            determinism_class=HONEST,
            usage=Usage(cpu_ms=1, wall_ms=1, peak_memory_kb=1, gpu_ms=0),
            finished_ms=now_ms,
        )
        signed = sign(result, k, CHAIN)
        self._take(self.req.receive(signed.raw, now_ms, output=sealed))
        unseal = Unseal(self.job_id, pub(k), result.replica, signed.id, seal_key)
        self._take(self.req.receive(sign(unseal, k, CHAIN).raw, now_ms + 1))

    def timer(self, kind: TimerKind, now_ms: int) -> list[str]:
        return self._take(self.req.timer(TimerKey(kind, self.job_id), now_ms))

    def done(self) -> scheduler.JobDone | None:
        return self.req.job(self.job_id).done

    def receipts_to(self) -> set[str]:
        return {
            self.who[e.peer]
            for e in self.effects
            if isinstance(e, Send) and isinstance(e.message.message, Receipt)
        }


def test_a_declined_established_award_goes_to_no_newcomer_and_the_sybils_are_never_paid() -> None:
    r = _Review()
    awarded = r.bid("sybil1", 900, 6) + r.bid("sybil2", 900, 7) + r.bid("sybil3", 900, 8)
    awarded += r.bid("veteran", 1000, 9)  # every named provider answered
    (first,) = [n for n in awarded if n != "veteran"]
    assert awarded == sorted([first, "veteran"])  # the veteran and the best sybil
    others = [n for n in ("sybil1", "sybil2", "sybil3") if n != first]
    # Before: the replacement went to another sybil at once, and the sybils' two matching
    # wrong outputs were verified and paid.
    assert r.decline("veteran", 20) == []
    r.deliver_wrong(first, 100)
    # Its one output decides nothing: the job announces again for an established bid; the
    # sybils' bids (held, and again now) are never awarded, the veteran is still busy.
    now = 100
    while r.done() is None and now < 60_000:
        now += 500
        for n in others:
            r.bid(n, 900, now)
        r.decline("veteran", now)
        now += 1_000
        assert r.timer(TimerKind.BIDS, now) == []
    if r.done() is None:
        r.timer(TimerKind.DEADLINE, 60_000)
    done = r.done()
    assert done is not None
    assert done.status == "unverified"  # its bytes were opened (the sybil sent its key)
    assert "providers on probation" in done.reason and "nobody is paid" in done.reason
    assert done.paid == ()
    assert set(r.awards) == {"veteran", first}
    assert r.receipts_to() == set()  # no receipt: no claim either
    assert not any(isinstance(e, Settle) for e in r.effects)
    refunds = [e for e in r.req.block(500, 70_000) if isinstance(e, Refund)]
    assert refunds == [Refund(r.job_id)]  # at the escrow's expiry: all of it back


# --- on the real ledger: a sybil requester's job fills the veteran's slot first ---------

STAKE = 1_000_000  # the default probation_stake


def _ledger_world(
    seed: int, *, sybils: str = "collude", spare_veteran: bool = False
) -> tuple[Sim, Node, Node, Node, list[Node], Node | None]:
    """A victim requester, an attacker requester added first (its award reaches the
    veteran first), a veteran (one slot; its runs take 60 s but it estimates 0.4 s), three
    newcomers (``sybils``: their behaviour) and, with ``spare_veteran``, a second
    established provider that bids dearer."""
    sim = Sim(seed, latency=(10, 10))
    attacker = sim.add_requester()
    victim = sim.add_requester()
    veteran = sim.add_provider(
        reputation=50, stake=STAKE, run_ms=60_000, base_run_ms=400, price_floor=900
    )
    spare = None
    if spare_veteran:
        spare = sim.add_provider(reputation=50, stake=STAKE, price_floor=4_000)
    newcomers = [sim.add_provider(sybils, price_floor=1_000) for _ in range(3)]
    return sim, attacker, victim, veteran, newcomers, spare


def _fill_the_slot_then_submit(
    sim: Sim, attacker: Node, victim: Node, veteran: Node, providers: list[Node]
) -> tuple[bytes, JobSpec]:
    """The attacker's funded one-replica job, named to the veteran alone, announced with
    the victim's: both locks land in one block, and the attacker's award is sent first."""
    mine = sim.spec(attacker, redundancy=1, max_retries=0, deadline_ms=110_000)
    sim.submit(attacker, mine, providers=[veteran])
    spec = sim.spec(victim, redundancy=2, max_retries=3, deadline_ms=40_000)
    return sim.submit(victim, spec, providers=providers), spec


def _requester(node: Node) -> Requester:
    assert node.requester is not None
    return node.requester


def _balance(sim: Sim, node: Node) -> int:
    return sim.ledger.state.account(node.pub).balance


def test_on_the_ledger_the_sybils_are_paid_nothing_once_the_veteran_declines() -> None:
    sim, attacker, victim, veteran, sybils, _ = _ledger_world(3)
    before = _balance(sim, victim)
    job, _ = _fill_the_slot_then_submit(sim, attacker, victim, veteran, [veteran, *sybils])
    sim.run_jobs([job], limit_ms=200_000)
    held = _requester(victim).job(job)
    declined = [r for r in held.replicas if r.provider == veteran.pub]
    assert declined and declined[0].reason == "declined the award"  # the attack happened
    done = sim.done[job]
    assert done.status != "verified" and done.paid == ()
    assert "providers on probation" in done.reason
    # Before: verified, and two sybils paid their bids from the victim's escrow.
    assert [_balance(sim, s) for s in sybils] == [0, 0, 0]
    escrow = sim.ledger.escrow(job)
    assert escrow is not None and not escrow.is_open and escrow.paid == ()
    assert _balance(sim, victim) == before  # refunded whole at its expiry
    sim.ledger.check_conservation()


def test_a_declining_veteran_is_replaced_by_another_established_bidder_and_the_job_verifies() -> (
    None
):
    sim, attacker, victim, veteran, newcomers, spare = _ledger_world(
        3, sybils="honest", spare_veteran=True
    )
    assert spare is not None
    # Round 6 (R6-7): with two established bidders an agreement needs two established
    # outputs, so a second spare takes the declined veteran's place beside the first.
    spare2 = sim.add_provider(reputation=50, stake=STAKE, price_floor=4_100)
    job, spec = _fill_the_slot_then_submit(
        sim, attacker, victim, veteran, [veteran, spare, spare2, *newcomers]
    )
    sim.run_jobs([job], limit_ms=200_000)
    held = _requester(victim).job(job)
    assert any(
        r.provider == veteran.pub and r.reason == "declined the award" for r in held.replicas
    )
    done = sim.done[job]
    assert done.status == "verified" and done.output == honest_output(spec)
    paid = {p.provider for p in done.paid}
    assert {spare.pub, spare2.pub} <= paid and veteran.pub not in paid
    assert paid - {spare.pub, spare2.pub} <= {n.pub for n in newcomers}
    assert _balance(sim, spare) > 0


def test_a_silent_veteran_is_replaced_by_another_established_bidder_and_the_job_verifies() -> None:
    # A real failure, no attack: the veteran takes the award and its process dies.
    sim = Sim(5)
    req = sim.add_requester()
    veteran = sim.add_provider(reputation=50, stake=STAKE, price_floor=900)
    spare = sim.add_provider(reputation=50, stake=STAKE, price_floor=4_000)
    # Round 6 (R6-7): with two established bidders an agreement needs two established
    # outputs, so a second spare takes the lost veteran's place beside the first.
    spare2 = sim.add_provider(reputation=50, stake=STAKE, price_floor=4_100)
    newcomers = [sim.add_provider(price_floor=1_000) for _ in range(3)]
    veteran.crash_after = lambda fx: isinstance(fx, scheduler.RunJob)
    spec = sim.spec(req, redundancy=2, max_retries=3)
    job = sim.submit(req, spec)
    sim.run_jobs([job])
    lost = [r for r in _requester(req).job(job).replicas if r.provider == veteran.pub]
    assert [r.state for r in lost] == ["failed"]  # went silent, or missed its deadline
    done = sim.done[job]
    assert done.status == "verified" and done.output == honest_output(spec)
    paid = {p.provider for p in done.paid}
    assert {spare.pub, spare2.pub} <= paid and veteran.pub not in paid
    assert paid - {spare.pub, spare2.pub} <= {n.pub for n in newcomers}


def test_with_no_established_bidder_at_all_newcomers_still_decide_and_are_paid() -> None:
    # The admitted limit, unchanged: a young network must work.
    sim = Sim(6)
    req = sim.add_requester()
    newcomers = [sim.add_provider(price_floor=1_000 + i) for i in range(3)]
    spec = sim.spec(req, redundancy=2, max_retries=2)
    job = sim.submit(req, spec)
    sim.run_jobs([job])
    done = sim.done[job]
    assert done.status == "verified" and done.output == honest_output(spec)
    assert len(done.paid) == 2
    assert sum(_balance(sim, n) for n in newcomers) == sum(p.amount for p in done.paid)


def test_with_no_established_bidder_colluding_newcomers_still_decide() -> None:
    # The admitted limit stated in specs/marketplace.md, "Known limits": with no
    # established provider bidding, newcomers (possibly one person's keys) decide.
    sim = Sim(6)
    req = sim.add_requester()
    for _ in range(3):
        sim.add_provider("collude", price_floor=1_000)
    spec = sim.spec(req, redundancy=2, max_retries=2)
    job = sim.submit(req, spec)
    sim.run_jobs([job])
    done = sim.done[job]
    assert done.status == "verified" and done.output != honest_output(spec)
