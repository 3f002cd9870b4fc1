"""Round-6 review finding R6-7: one staked key and one free key decided an exact job.

Key S self-deals three fee-0 settles and bonds ``probation_stake`` (established: R5-3's
price, returned after unbonding); key N is fresh. On an honest requester's exact job at
redundancy 2 that an honest established veteran V bid for, S and N got their matching
wrong output verified and paid three ways:

1. bidding cheaper in a class of their own: S's was the best established bid, so its
   class was the anchor and V's bid was filtered out (no probation replica: S is
   established);
2. all in V's class: S and V were awarded, disagreed, the third replica went to N, which
   agreed with S: 2 of 3 with an established provider among them, verified, and V was
   attested against and slashed (framed);
3. answering first: S's and N's bids closed the window (``enough_answers``) before V's.

Now an agreement needs two established providers' outputs when two bid (redundancy >= 2),
the anchor class is named by the established providers (the most of them, then the
strongest record), only established outputs count when theirs disagree, and the window
does not end early with fewer than two established bids in hand. A young network (no
established provider) and two honest established providers still verify.
"""

from __future__ import annotations

import functools
import hashlib

import ledger
import protocol
import scheduler
from ledger import tx
from protocol import (
    Bid,
    InputRef,
    JobSpec,
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
    Attest,
    Effect,
    Requester,
    RequesterConfig,
    Send,
    Settle,
    Slash,
    TimerKey,
    TimerKind,
)
from scheduler._pricing import Reputation

from ..keys import key, pub
from ._harness import Sim, honest_output

CHAIN = "review6-one-stake"
HONEST = "ort-1.32.0/cpu/avx2/extended"
EVIL = "made-up/class"
WRONG = b"WRONG" * 20
RIGHT = b"RIGHT" * 20
STAKE = 1_000_000  # the default probation_stake
VETERAN = Reputation(score_permille=950, settled_jobs=50, stake=STAKE)
DEADLINE_MS = 60_000


def _commit(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def _spec(requester: bytes, nonce: int, *, redundancy: int, max_price: int, expiry: int) -> JobSpec:
    return JobSpec(
        requester=requester,
        nonce=nonce.to_bytes(16, "big"),
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
        max_price=max_price,
        redundancy=redundancy,
        max_retries=3,
        verification=VerificationPolicy(mode="exact", rtol_e9=0, atol_e9=0, spot_check_permille=0),
        created_ms=0,
        bid_window_ms=1_000,
        deadline_ms=DEADLINE_MS,
        escrow_expiry_height=expiry,
    )


@functools.cache
def _sybil_ledger() -> ledger.State:
    """The review's staked sybil on the real pure ledger: key ``staked`` bonds
    ``probation_stake``, and its owner's other key locks and settles three 1-credit jobs
    to it at fee 0 (``staked`` pays each credit back): 10 free transactions."""
    coord, owner, staked = key("r6os-coord"), key("r6os-owner"), key("r6os-staked")
    genesis = ledger.make_genesis(CHAIN, [pub(coord)], {pub(owner): 2, pub(staked): STAKE + 1})
    prod = ledger.Producer(coord, ledger.State.from_genesis(genesis), interval_ms=500, now_ms=0)
    seq = {pub(owner): 0, pub(staked): 0}
    now = 0

    def send(k: tx.Key, t: protocol.Signed[protocol.Transaction]) -> None:
        nonlocal now
        prod.submit(t.raw)
        seq[pub(k)] += 1
        now += 500
        prod.tick(now)

    send(staked, tx.stake(staked, CHAIN, 0, amount=STAKE, expiry_height=30))
    for n in range(3):
        h = prod.state.height
        own = sign(_spec(pub(owner), 1000 + n, redundancy=1, max_price=1, expiry=400), owner, CHAIN)
        send(
            owner,
            tx.lock(
                owner,
                CHAIN,
                seq[pub(owner)],
                job_id=own.id,
                amount=1,
                claim_height=h + 2,
                escrow_expiry=h + 300,
                max_per_payee=1,
                max_payees=1,
                spec=own.raw,
                expiry_height=h + 30,
            ),
        )
        offer = Bid(own.id, pub(staked), 1, 1, "x", 1, 10**9)
        bid = sign(offer, staked, CHAIN)
        payouts = {pub(staked): 1}
        bids = {pub(staked): bid.raw}
        settle = tx.settle(
            owner,
            CHAIN,
            seq[pub(owner)],
            job_id=own.id,
            payouts=payouts,
            bids=bids,
            expiry_height=h + 30,
        )
        send(owner, settle)
        back = tx.transfer(
            staked, CHAIN, seq[pub(staked)], to=pub(owner), amount=1, expiry_height=h + 30
        )
        send(staked, back)
    return prod.state


class _Review:
    """An honest requester's real Requester (default configuration: fixed replication);
    the veteran ``V`` (50 settled jobs), the staked sybil ``S`` (its record read from
    ``_sybil_ledger``) and the fresh sybil ``N`` answer by hand."""

    def __init__(self) -> None:
        state = _sybil_ledger()
        self.keys = {"V": key("r6os-veteran"), "S": key("r6os-staked"), "N": key("r6os-fresh")}
        self.keys["V2"] = key("r6os-veteran2")  # a second veteran, bidding from the topic
        self.who = {pub(k): n for n, k in self.keys.items()}

        def reputation(p: bytes) -> Reputation:
            if self.who.get(p) in ("V", "V2"):
                return VETERAN
            return Reputation(*state.provider_record(p))

        self.req_key = key("r6os-requester")
        config = RequesterConfig(
            key=self.req_key, chain_id=CHAIN, commitment=_commit, reputation=reputation
        )
        assert scheduler.established(reputation(pub(self.keys["S"])), config)  # the attack
        assert not scheduler.established(reputation(pub(self.keys["N"])), config)
        self.req = Requester(config)
        self.req.block(state.height, 0)
        spec = _spec(
            pub(self.req_key), 21, redundancy=2, max_price=5_000, expiry=state.height + 300
        )
        named = [pub(self.keys[n]) for n in ("V", "S", "N")]
        self.job_id, _ = self.req.submit(spec, 0, providers=named)
        self.effects: list[Effect] = list(self.req.escrow_locked(self.job_id, 1))
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

    def bid(self, name: str, price: int, cls: str, now_ms: int) -> list[str]:
        offer = Bid(self.job_id, pub(self.keys[name]), price, 5_000, cls, 1_000, DEADLINE_MS)
        return self._take(self.req.receive(sign(offer, self.keys[name], CHAIN).raw, now_ms))

    def deliver(self, name: str, data: bytes, cls: str, now_ms: int) -> list[str]:
        """A result with its output sealed, and the key handed over at once (a sybil
        does not wait for a receipt; an honest provider's key would come after one)."""
        k = self.keys[name]
        seal_key = hashlib.sha256(pub(k)).digest()
        sealed = seal_output(seal_key, data)
        result = Result(
            job_id=self.job_id,
            provider=pub(k),
            replica=self.awards[name].replica,
            outcome="ok",
            message="",
            output_commitment=_commit(data),
            output_hash=content_hash(sealed),
            output_size=len(sealed),
            key_hash=key_hash(seal_key),
            determinism_class=cls,
            usage=Usage(cpu_ms=1, wall_ms=1, peak_memory_kb=1, gpu_ms=0),
            finished_ms=now_ms,
        )
        signed = sign(result, k, CHAIN)
        new = self._take(self.req.receive(signed.raw, now_ms, output=sealed))
        unseal = Unseal(self.job_id, pub(k), result.replica, signed.id, seal_key)
        return new + self._take(self.req.receive(sign(unseal, k, CHAIN).raw, now_ms + 1))

    def finish(self, now_ms: int) -> scheduler.JobDone:
        """Run the job's timers to its end: every bid window (the job announces again for
        the established bid it waits for; the sybils bid again each time) and the
        deadline."""
        now = now_ms
        while self.done() is None and now < DEADLINE_MS:
            now += 500
            self.bid("S", 400, HONEST, now)
            self.bid("N", 400, HONEST, now)
            now += 16_000
            self._take(self.req.timer(TimerKey(TimerKind.BIDS, self.job_id), now))
        if self.done() is None:
            self._take(self.req.timer(TimerKey(TimerKind.DEADLINE, self.job_id), DEADLINE_MS))
        done = self.done()
        assert done is not None
        return done

    def done(self) -> scheduler.JobDone | None:
        return self.req.job(self.job_id).done

    def receipts_to(self) -> set[str]:
        return {
            self.who[e.peer]
            for e in self.effects
            if isinstance(e, Send) and isinstance(e.message.message, Receipt)
        }

    def paid_by_settle(self) -> set[str]:
        return {self.who[p] for e in self.effects if isinstance(e, Settle) for p in e.as_dict()}

    def against(self, name: str) -> list[Effect]:
        """Attestations and slashes about ``name``."""
        who = pub(self.keys[name])
        return [
            e
            for e in self.effects
            if (isinstance(e, Attest) and e.subject == who)
            or (isinstance(e, Slash) and e.provider == who)
        ]


def _no_sybil_paid(r: _Review, done: scheduler.JobDone) -> None:
    assert done.status != "verified"
    assert not {r.who[p.provider] for p in done.paid} & {"S", "N"}
    assert not r.receipts_to() & {"S", "N"}  # no receipt: no claim either
    assert not r.paid_by_settle() & {"S", "N"}


def test_a_staked_key_and_a_free_key_in_a_class_of_their_own_do_not_name_the_anchor() -> None:
    # Way 1: cheaper, in a made-up class. Before: S's class was the anchor, V's bid was
    # filtered out, S and N were awarded, verified and paid for their wrong output.
    r = _Review()
    awarded = r.bid("V", 500, HONEST, 5) + r.bid("S", 400, EVIL, 10) + r.bid("N", 400, EVIL, 15)
    assert awarded == ["V"]  # the class the established providers name (V's record is stronger)
    assert "S" not in r.awards and "N" not in r.awards
    r.deliver("V", RIGHT, HONEST, 100)
    done = r.finish(200)
    _no_sybil_paid(r, done)
    assert r.against("V") == []


def test_a_staked_key_and_a_free_key_never_outvote_nor_frame_the_established_veteran() -> None:
    # Way 2: all bids in V's class. Before: S and V awarded, a third replica to N, which
    # agreed with S: verified, S and N paid, V attested against and slashed.
    r = _Review()
    awarded = r.bid("V", 500, HONEST, 5) + r.bid("S", 400, HONEST, 10) + r.bid("N", 400, HONEST, 15)
    assert awarded == ["S", "V"]
    assert r.deliver("S", WRONG, HONEST, 100) == []
    # The established outputs disagree: only another established provider's can break
    # the tie, never the fresh key's (it is not awarded).
    assert r.deliver("V", RIGHT, HONEST, 150) == []
    done = r.finish(200)
    assert "N" not in r.awards
    _no_sybil_paid(r, done)
    assert r.against("V") == []  # never attested against, never slashed
    assert done.status == "failed" and "disagree" in done.reason


def test_a_staked_key_and_a_free_key_answering_first_do_not_close_the_bid_window() -> None:
    # Way 3: S and N bid first (dearer). Before: the window closed on their two bids
    # (redundancy 2, one established), they were awarded, verified and paid.
    r = _Review()
    assert r.bid("S", 900, HONEST, 5) + r.bid("N", 900, HONEST, 10) == []
    awarded = r.bid("V", 300, HONEST, 40)  # 30 ms later: two established bids in hand
    assert awarded == ["S", "V"]
    r.deliver("S", WRONG, HONEST, 100)
    r.deliver("V", RIGHT, HONEST, 150)
    done = r.finish(200)
    assert "N" not in r.awards
    _no_sybil_paid(r, done)
    assert r.against("V") == []


def test_a_second_established_provider_breaks_the_tie_and_the_staked_sybil_is_outvoted() -> None:
    # The tie goes to more established replicas: a second veteran's bid on the job's
    # re-announcement is awarded (the fresh key's is not) and decides it.
    r = _Review()
    r.bid("V", 500, HONEST, 5)
    r.bid("S", 400, HONEST, 10)
    r.bid("N", 400, HONEST, 15)
    r.deliver("S", WRONG, HONEST, 100)
    r.deliver("V", RIGHT, HONEST, 150)
    r.bid("N", 400, HONEST, 300)
    assert r.bid("V2", 600, HONEST, 400) == []  # the re-announcement's window is open
    assert r._take(r.req.timer(TimerKey(TimerKind.BIDS, r.job_id), 2_500)) == ["V2"]
    r.deliver("V2", RIGHT, HONEST, 3_000)
    done = r.done()
    assert done is not None and done.status == "verified"
    assert done.output is not None and done.output.data == RIGHT
    assert {r.who[p.provider] for p in done.paid} == {"V", "V2"}
    assert [type(e) for e in r.against("S")] == [Slash, Attest]  # outvoted by two veterans
    assert r.against("V") == []


# --- end to end: real Provider machines, the real pure ledger --------------------------


def test_on_the_ledger_the_sybils_earn_nothing_and_the_veteran_keeps_its_stake() -> None:
    sim = Sim(11)
    req = sim.add_requester()
    veteran = sim.add_provider(reputation=50, stake=STAKE, price_floor=1_000)
    staked = sim.add_provider("collude", reputation=3, stake=STAKE, price_floor=700)
    fresh = sim.add_provider("collude", price_floor=700)
    spec = sim.spec(req, redundancy=2, max_retries=3)
    job = sim.submit(req, spec)
    sim.run_jobs([job], limit_ms=200_000)
    done = sim.done[job]
    assert done.status != "verified"
    assert sim.ledger.state.account(staked.pub).balance == 0
    assert sim.ledger.state.account(fresh.pub).balance == 0
    assert sim.ledger.state.account(veteran.pub).stake == STAKE  # never slashed
    assert not [a for a in sim.attests if a.subject == veteran.pub and not a.positive]
    assert not [s for s in sim.slashes if s.provider == veteran.pub]
    sim.ledger.check_conservation()


def test_two_honest_established_providers_still_verify_a_redundancy_2_job() -> None:
    sim = Sim(12)
    req = sim.add_requester()
    veterans = [sim.add_provider(reputation=50, stake=STAKE, price_floor=1_000 + i) for i in (0, 1)]
    newcomers = [sim.add_provider(price_floor=800) for _ in range(2)]
    spec = sim.spec(req, redundancy=2, max_retries=3)
    job = sim.submit(req, spec)
    sim.run_jobs([job])
    done = sim.done[job]
    assert done.status == "verified" and done.output == honest_output(spec)
    paid = {p.provider for p in done.paid}
    assert {v.pub for v in veterans} <= paid
    assert paid - {v.pub for v in veterans} <= {n.pub for n in newcomers}


def test_a_young_network_with_no_established_provider_still_verifies() -> None:
    sim = Sim(13)
    req = sim.add_requester()
    newcomers = [sim.add_provider(price_floor=800 + i) for i in range(3)]
    spec = sim.spec(req, redundancy=2, max_retries=3)
    job = sim.submit(req, spec)
    sim.run_jobs([job])
    done = sim.done[job]
    assert done.status == "verified" and done.output == honest_output(spec)
    assert {p.provider for p in done.paid} <= {n.pub for n in newcomers}
    assert len(done.paid) == 2
