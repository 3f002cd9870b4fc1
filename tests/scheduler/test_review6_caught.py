"""Round-6 review finding R6-3: a staked sybil at redundancy 1 had nothing at risk.

Key S self-deals three fee-0 settles and bonds ``probation_stake`` (established: R5-3's
price, returned after unbonding). It bids below the honest veteran V on redundancy-1 jobs
(the API's default), runs alone and is paid for any output. A spot check (known answer)
it failed cost it that job's pay only: no slash (a slash needs two paid agreeing
providers), nothing on its ledger record (the attestation is about a party the escrow did
not pay), and under ``fixed`` replication (the default) the same requester awarded it alone
again and paid it for a wrong output.

Now a provider a requester caught gets no more awards from it under every replication
mode, and ``established`` also asks for no whole unit of failure on the ledger record, so
a provider attested against (or slashed) is on probation again. Honest providers are not
affected.
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
from scheduler import Effect, Requester, RequesterConfig, Send, TimerKey, TimerKind
from scheduler._effects import Output
from scheduler._pricing import Reputation

from ..keys import key, pub

CHAIN = "review6-caught"
HONEST = "ort-1.32.0/cpu/avx2/extended"
WRONG = b"WRONG" * 20
RIGHT = b"RIGHT" * 20
STAKE = 1_000_000  # the default probation_stake
VETERAN = Reputation(score_permille=950, settled_jobs=50, stake=STAKE)
DEADLINE_MS = 60_000


def _commit(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def _spec(requester: bytes, nonce: int, *, max_price: int, expiry: int) -> JobSpec:
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
        redundancy=1,
        max_retries=3,
        verification=VerificationPolicy(mode="exact", rtol_e9=0, atol_e9=0, spot_check_permille=0),
        created_ms=0,
        bid_window_ms=1_000,
        deadline_ms=DEADLINE_MS,
        escrow_expiry_height=expiry,
    )


class _Chain:
    """The real pure ledger, one transaction a block."""

    def __init__(self, balances: dict[bytes, int]) -> None:
        coord = key("r6c-coord")
        genesis = ledger.make_genesis(CHAIN, [pub(coord)], balances)
        self.prod = ledger.Producer(
            coord, ledger.State.from_genesis(genesis), interval_ms=500, now_ms=0
        )
        self.seq: dict[bytes, int] = {}
        self.now = 0

    def send(
        self, k: tx.Key, make: functools.partial[protocol.Signed[protocol.Transaction]]
    ) -> None:
        h = self.prod.state.height
        t = make(k, CHAIN, self.seq.get(pub(k), 0), expiry_height=h + 30)
        self.prod.submit(t.raw)
        self.seq[pub(k)] = self.seq.get(pub(k), 0) + 1
        self.now += 500
        self.prod.tick(self.now)

    def pay(self, payer: tx.Key, provider: tx.Key, nonce: int, amount: int) -> bytes:
        """``payer`` locks and settles a job of ``amount`` to ``provider`` (its real Bid)."""
        h = self.prod.state.height
        own = sign(_spec(pub(payer), nonce, max_price=amount, expiry=h + 300), payer, CHAIN)
        lock = functools.partial(
            tx.lock,
            job_id=own.id,
            amount=amount,
            claim_height=h + 2,
            escrow_expiry=h + 300,
            max_per_payee=amount,
            max_payees=1,
            spec=own.raw,
        )
        self.send(payer, lock)
        bid = sign(Bid(own.id, pub(provider), amount, 1, "x", 1, 10**9), provider, CHAIN)
        payouts = {pub(provider): amount}
        settle = functools.partial(
            tx.settle, job_id=own.id, payouts=payouts, bids={pub(provider): bid.raw}
        )
        self.send(payer, settle)
        return own.id

    def record(self, k: tx.Key) -> Reputation:
        return Reputation(*self.prod.state.provider_record(pub(k)))


@functools.cache
def _sybil_ledger() -> ledger.State:
    """The review's staked sybil: key ``staked`` bonds ``probation_stake``, and its owner's
    other key settles three 1-credit jobs to it at fee 0 (``staked`` pays each back)."""
    owner, staked = key("r6c-owner"), key("r6c-staked")
    chain = _Chain({pub(owner): 2, pub(staked): STAKE + 1})
    chain.send(staked, functools.partial(tx.stake, amount=STAKE))
    for n in range(3):
        chain.pay(owner, staked, 1000 + n, 1)
        chain.send(staked, functools.partial(tx.transfer, to=pub(owner), amount=1))
    return chain.prod.state


class _Requester:
    """An honest requester's real Requester (default configuration: fixed replication);
    the veteran ``V`` (50 settled jobs) and the staked sybil ``S`` (its record read from
    ``_sybil_ledger``) answer by hand."""

    def __init__(self, records: dict[str, Reputation] | None = None) -> None:
        state = _sybil_ledger()
        self.keys = {"V": key("r6c-veteran"), "S": key("r6c-staked"), "V2": key("r6c-vet2")}
        self.who = {pub(k): n for n, k in self.keys.items()}
        extra = records or {}

        def reputation(p: bytes) -> Reputation:
            name = self.who.get(p, "")
            if name in extra:
                return extra[name]
            if name in ("V", "V2"):
                return VETERAN
            return Reputation(*state.provider_record(p))

        self.req_key = key("r6c-requester")
        # No audits (a second replica at random: tests/scheduler/test_fixed_audit.py): the
        # awards below are checked one by one.
        self.config = RequesterConfig(
            key=self.req_key,
            chain_id=CHAIN,
            commitment=_commit,
            reputation=reputation,
            audit_permille=0,
        )
        self.req = Requester(self.config)
        self.req.block(state.height, 0)
        self.expiry = state.height + 300
        self.awards: dict[bytes, dict[str, protocol.Award]] = {}
        self.effects: list[Effect] = []

    def submit(self, nonce: int, known: bytes | None = None) -> bytes:
        spec = _spec(pub(self.req_key), nonce, max_price=5_000, expiry=self.expiry)
        answer = None if known is None else Output(known, _commit(known), HONEST)
        # Bids from the topic alone: the window runs to its end (``window_ends``).
        job_id, effects = self.req.submit(spec, 0, known_answer=answer)
        self.awards[job_id] = {}
        self._take(job_id, effects + self.req.escrow_locked(job_id, 1))
        return job_id

    def _take(self, job_id: bytes, effects: list[Effect]) -> list[str]:
        self.effects += effects
        new = []
        for e in effects:
            if isinstance(e, Send) and isinstance(e.message.message, protocol.Award):
                name = self.who[e.message.message.provider]
                self.awards[job_id][name] = e.message.message
                new.append(name)
        return sorted(new)

    def bid(self, job_id: bytes, name: str, price: int, now_ms: int) -> list[str]:
        k = self.keys[name]
        offer = Bid(job_id, pub(k), price, 5_000, HONEST, 1_000, DEADLINE_MS)
        return self._take(job_id, self.req.receive(sign(offer, k, CHAIN).raw, now_ms))

    def window_ends(self, job_id: bytes, now_ms: int) -> list[str]:
        return self._take(job_id, self.req.timer(TimerKey(TimerKind.BIDS, job_id), now_ms))

    def deliver(self, job_id: bytes, name: str, data: bytes, now_ms: int) -> list[str]:
        """A result with its output sealed, and the key handed over at once."""
        k = self.keys[name]
        seal_key = hashlib.sha256(pub(k) + job_id).digest()
        sealed = seal_output(seal_key, data)
        result = Result(
            job_id=job_id,
            provider=pub(k),
            replica=self.awards[job_id][name].replica,
            outcome="ok",
            message="",
            output_commitment=_commit(data),
            output_hash=content_hash(sealed),
            output_size=len(sealed),
            key_hash=key_hash(seal_key),
            determinism_class=HONEST,
            usage=Usage(cpu_ms=1, wall_ms=1, peak_memory_kb=1, gpu_ms=0),
            finished_ms=now_ms,
        )
        signed = sign(result, k, CHAIN)
        new = self._take(job_id, self.req.receive(signed.raw, now_ms, output=sealed))
        unseal = Unseal(job_id, pub(k), result.replica, signed.id, seal_key)
        return new + self._take(job_id, self.req.receive(sign(unseal, k, CHAIN).raw, now_ms + 1))

    def done(self, job_id: bytes) -> scheduler.JobDone:
        done = self.req.job(job_id).done
        assert done is not None
        return done

    def paid(self, job_id: bytes) -> list[str]:
        return sorted(self.who[p.provider] for p in self.done(job_id).paid)

    def spot_check_caught_the_sybil(self) -> None:
        """The review's job 1: a spot check (known answer) at redundancy 1. The sybil
        bids cheaper, runs alone, contradicts the known answer; the veteran's replica
        decides it."""
        spot = self.submit(11, known=RIGHT)
        assert self.bid(spot, "S", 400, 5) + self.bid(spot, "V", 500, 40) == []
        assert self.window_ends(spot, 1_200) == ["S"]
        assert self.deliver(spot, "S", WRONG, 1_300) == ["V"]  # contradicted: one more
        self.deliver(spot, "V", RIGHT, 1_400)
        assert self.done(spot).status == "verified" and self.paid(spot) == ["V"]
        assert pub(self.keys["S"]) in self.req.caught


def test_a_sybil_that_failed_a_spot_check_is_not_awarded_the_requesters_next_job() -> None:
    r = _Requester()
    assert scheduler.established(r.config.reputation(pub(r.keys["S"])), r.config)  # the attack
    r.spot_check_caught_the_sybil()
    # The next ordinary job (redundancy 1, fixed replication). Before: awarded to the
    # sybil alone, its wrong output verified and paid.
    job = r.submit(12)
    assert r.bid(job, "S", 400, 5) + r.bid(job, "V", 500, 40) == []
    assert r.window_ends(job, 1_200) == ["V"]
    assert "S" not in r.awards[job]
    r.deliver(job, "V", RIGHT, 1_300)
    done = r.done(job)
    assert done.status == "verified" and done.output is not None and done.output.data == RIGHT
    assert r.paid(job) == ["V"]


def test_a_bid_kept_before_its_provider_was_caught_is_not_awarded() -> None:
    # The sybil bids for two jobs at once; it is caught in the first before the second's
    # window ends. Its bid kept in the second is not awarded (before: it was, alone).
    r = _Requester()
    later = r.submit(13)
    assert r.bid(later, "S", 400, 5) + r.bid(later, "V", 500, 40) == []
    r.spot_check_caught_the_sybil()
    assert r.window_ends(later, 1_500) == ["V"]
    assert "S" not in r.awards[later]


def test_a_caught_provider_bidding_alone_is_never_awarded_and_the_job_fails() -> None:
    # Refused, not ranked last: were it only last, it would be awarded wherever it is the
    # only bidder (the honest ones busy), and paid for a wrong output again.
    r = _Requester()
    r.spot_check_caught_the_sybil()
    job = r.submit(14)
    now = 5
    while r.req.job(job).done is None and now < DEADLINE_MS:
        r.bid(job, "S", 400, now)
        now += 16_000
        r.window_ends(job, now)
    if r.req.job(job).done is None:
        r._take(job, r.req.timer(TimerKey(TimerKind.DEADLINE, job), DEADLINE_MS))
    assert "S" not in r.awards[job]
    assert r.done(job).status == "failed" and r.paid(job) == []
    assert "caught with a wrong result" in r.done(job).reason  # not "no bids"


def test_one_paid_attestation_does_not_make_a_veteran_a_newcomer() -> None:
    # Round 8, R8-4: R6-3 first made a whole failure unit end being established. Any
    # requester that pays a provider one job of 800 may attest against it: one such
    # attestation made the honest veteran a newcomer, and a staked key and a free key then
    # decided its jobs. On the real ledger: X bonds probation_stake and is paid 4 jobs of
    # 800; the last job's requester attests against it (a whole unit of failure weight).
    requester, x = key("r6c-payer"), key("r6c-x")
    chain = _Chain({pub(requester): 10_000, pub(x): STAKE})
    chain.send(x, functools.partial(tx.stake, amount=STAKE))
    config = RequesterConfig(key=requester, chain_id=CHAIN, commitment=_commit)
    last = b""
    for n in range(4):
        last = chain.pay(requester, x, 100 + n, 800)
    clean = chain.record(x)
    assert clean.failures == 0 and scheduler.established(clean, config)
    attest = functools.partial(tx.attest, job_id=last, subject=pub(x), positive=False)
    chain.send(requester, attest)
    marked = chain.record(x)
    assert marked.failures == 1 and marked.stake == STAKE and marked.settled_jobs == 4
    assert scheduler.established(marked, config)  # still past probation


def test_honest_established_providers_are_unaffected() -> None:
    # An honest veteran right in a spot check stays established and is awarded the next
    # jobs alone; a second veteran too; nobody is caught.
    r = _Requester()
    spot = r.submit(16, known=RIGHT)
    assert r.bid(spot, "V", 500, 5) + r.bid(spot, "V2", 600, 10) == []
    assert r.window_ends(spot, 1_200) == ["V"]
    r.deliver(spot, "V", RIGHT, 1_300)
    assert r.done(spot).status == "verified" and r.paid(spot) == ["V"]
    for nonce, name in ((17, "V"), (18, "V2")):
        job = r.submit(nonce)
        cheap, dear = ("V", "V2") if name == "V" else ("V2", "V")
        assert r.bid(job, cheap, 500, 5) + r.bid(job, dear, 600, 10) == []
        assert r.window_ends(job, 1_200) == [name]
        r.deliver(job, name, RIGHT, 1_300)
        assert r.done(job).status == "verified" and r.paid(job) == [name]
    assert dict(r.req.caught) == {}
    assert scheduler.established(VETERAN, r.config)
