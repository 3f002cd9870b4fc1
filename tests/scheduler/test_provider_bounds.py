"""The provider against announcements crafted to hurt it (issue 14, attacks 2 and 8; review
h23, P1): absurd times are refused unanswered, a far bid window does not keep the provider
busy, one requester cannot take every open bid, the bids for jobs with no escrow are
bounded and an announcement costs the same however many are open, and the answered set
stays bounded."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import ledger
import protocol
from protocol import Bid, InputRef, JobSpec, NoBid, Requirements, VerificationPolicy
from scheduler import Misbehaved, Provider, ProviderConfig, Send, TimerKey, TimerKind, WorkPhase
from scheduler._pricing import bid_price
from scheduler._provider_bids import MAX_ANSWERED, MAX_UNFUNDED_BIDS

from ..keys import key, pub
from ._harness import CHAIN, CLASS, START_MS

U64 = (1 << 64) - 1


class Sim:
    """Just a clock and a nonce counter: these tests need no network."""

    def __init__(self, seed: int) -> None:
        self.now = START_MS
        self._n = seed << 32

    def spec(self, who: str, **fields: Any) -> JobSpec:
        self._n += 1
        spec = JobSpec(
            requester=pub(key(who)),
            nonce=self._n.to_bytes(16, "big"),
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
                mode="exact", rtol_e9=0, atol_e9=0, spot_check_permille=0
            ),
            created_ms=self.now,
            bid_window_ms=300,
            deadline_ms=self.now + 20_000,
            escrow_expiry_height=100,
        )
        return replace(spec, **fields)


def _provider() -> Provider:
    return Provider(
        ProviderConfig(key=key("provider"), chain_id=CHAIN, capability_classes=(CLASS,))
    )


def _answers(effects: Sequence[object]) -> list[object]:
    return [e.message.message for e in effects if isinstance(e, Send)]


def _announce(sim: Sim, who: str, **fields: int) -> bytes:
    return protocol.sign(sim.spec(who, **fields), key(who), CHAIN).raw


def test_a_spec_whose_bid_would_overflow_is_refused_not_raised() -> None:
    sim = Sim(1)
    prov = _provider()
    now = sim.now
    for fields in (
        {"deadline_ms": U64, "bid_window_ms": 1},
        {"deadline_ms": U64, "bid_window_ms": U64 - now - 1},
        {"deadline_ms": now + 3_600_000, "bid_window_ms": 3_000_000},
        {"deadline_ms": now + 25 * 3_600_000},
    ):
        effects = prov.receive(_announce(sim, "mallory", **fields), now)
        assert [type(e) for e in effects] == [Misbehaved], fields
        assert prov.work == {}


def test_far_bid_windows_do_not_starve_the_provider() -> None:
    """Four announcements with a 24 h bid window made every real job answered "busy"."""
    sim = Sim(2)
    prov = _provider()
    now = sim.now
    for i in range(4):
        fake = _announce(
            sim, f"mallory-{i}", bid_window_ms=60_000, deadline_ms=now + 23 * 3_600_000
        )
        prov.receive(fake, now)
    later = now + 10_001
    honest = _announce(sim, "alice")
    answers = _answers(prov.receive(honest, later))
    assert [type(a) for a in answers] == [Bid], answers


def test_one_requester_counts_as_load_for_others_up_to_half_the_open_bids() -> None:
    sim = Sim(3)
    prov = _provider()  # one slot, overbook 2: two open bids, one requester's share is one
    now = sim.now
    answers = [_answers(prov.receive(_announce(sim, "mallory"), now)) for _ in range(3)]
    assert [type(a[0]) for a in answers] == [Bid, Bid, NoBid]
    assert isinstance(answers[2][0], NoBid) and answers[2][0].reason == "busy"
    honest = _answers(prov.receive(_announce(sim, "alice"), now))
    assert [type(a) for a in honest] == [Bid]


class _Escrow:
    """A locked, open escrow as the ledger shows it (only what the load rule reads)."""

    def __init__(self, owner: bytes) -> None:
        self.owner = owner
        self.is_open = True

    def paid_to(self, provider: bytes) -> int:
        return 0

    def reserved_for(self, provider: bytes) -> int:
        return 0

    places: frozenset[bytes] = frozenset()
    max_payees = 4

    def claimable_by(self, provider: bytes) -> bool:
        return self.is_open


def test_announcements_from_many_keys_that_lock_nothing_do_not_make_the_provider_busy() -> None:
    """Attack 8 from several keys: each key's share was bounded, their sum was not."""
    sim = Sim(5)
    funded: dict[bytes, _Escrow] = {}
    # two slots, overbook 2: four open bids; another requester's share is two
    prov = _provider_with(funded, max_concurrency=2)
    now = sim.now
    for i in range(8):
        (answer,) = _answers(prov.receive(_announce(sim, f"mallory-{i}"), now))
        assert isinstance(answer, Bid)
    assert prov.pending(now) == 8
    (honest,) = _answers(prov.receive(_announce(sim, "alice"), now))
    assert isinstance(honest, Bid)

    # Nor from requesters that locked their escrows (refunded at expiry: a lock proves
    # no load), nor both together (review round 63, G2): every other requester's pending
    # bids count together up to half the capacity.
    for funders, free in ((2, 0), (1, 2)):
        sim, prov = Sim(6), _provider_with(funded, max_concurrency=2)
        for i in range(funders):
            for _ in range(2):
                spec = _announce(sim, f"bob-{i}")
                funded[protocol.content_hash(spec)] = _Escrow(pub(key(f"bob-{i}")))
                prov.receive(spec, now)
        for i in range(free):
            prov.receive(_announce(sim, f"mallory-{i}"), now)
        assert prov.pending(now) == 2 * funders + free == 4  # the capacity: 2 slots x 2
        (honest,) = _answers(prov.receive(_announce(sim, "alice"), now))
        assert isinstance(honest, Bid)  # the tree before: NoBid busy, for every requester
    # A requester's own pending bids still count in full: alice is busy at her own four.
    for _ in range(3):
        prov.receive(_announce(sim, "alice"), now)
    (busy,) = _answers(prov.receive(_announce(sim, "alice"), now))
    assert isinstance(busy, NoBid) and busy.reason == "busy"


def _provider_with(funded: Mapping[bytes, _Escrow | ledger.Escrow], **fields: int) -> Provider:
    return Provider(
        ProviderConfig(
            key=key("provider"),
            chain_id=CHAIN,
            capability_classes=(CLASS,),
            escrow_of=lambda job_id: funded.get(job_id),  # type: ignore[arg-type,return-value]
            **fields,  # type: ignore[arg-type]
        )
    )


def test_bids_for_jobs_with_no_escrow_are_bounded_and_not_scanned() -> None:
    """Review h23, P1: announcements from fresh keys that never lock were all bid on, each
    kept a Work until its bid expired, and each announcement looked up the escrow of every
    pending bid (quadratic CPU). Past ``MAX_UNFUNDED_BIDS`` such a requester is answered
    busy and nothing is kept; a funded job, or a requester seen locking, still gets a bid."""
    sim = Sim(7)
    funded: dict[bytes, _Escrow] = {}
    lookups: list[bytes] = []

    def escrow_of(job_id: bytes) -> _Escrow | None:
        lookups.append(job_id)
        return funded.get(job_id)

    prov = Provider(
        ProviderConfig(
            key=key("provider"),
            chain_id=CHAIN,
            capability_classes=(CLASS,),
            max_concurrency=2,
            escrow_of=escrow_of,  # type: ignore[arg-type]
        )
    )
    now = sim.now
    # carol locks for a job of hers we bid on: a requester seen locking
    carol = _announce(sim, "carol")
    funded[protocol.content_hash(carol)] = _Escrow(pub(key("carol")))
    prov.receive(carol, now)
    answers = []
    for i in range(MAX_UNFUNDED_BIDS + 20):
        raw = _announce(sim, f"mallory-{i}", bid_window_ms=60_000, deadline_ms=now + 120_000)
        before = len(lookups)
        (answer,) = _answers(prov.receive(raw, now + i))
        assert len(lookups) - before <= 1  # its own escrow only, not every open bid's
        answers.append(answer)
    bids = [a for a in answers if isinstance(a, Bid)]
    busy = [a for a in answers if isinstance(a, NoBid)]
    assert len(bids) == MAX_UNFUNDED_BIDS and len(busy) == 20
    assert all(a.reason == "busy" and "no escrow" in a.detail for a in busy)
    assert len(prov.work) == MAX_UNFUNDED_BIDS + 1
    # A job whose escrow is on the ledger, and a requester seen locking, are bid on.
    later = now + 1_000
    bob = _announce(sim, "bob")
    funded[protocol.content_hash(bob)] = _Escrow(pub(key("bob")))
    (answer,) = _answers(prov.receive(bob, later))
    assert isinstance(answer, Bid)
    # ... at a price that counts the strangers' pending bids only up to half the open-bid
    # capacity (one slot of two), not the full load markup.
    cfg = prov.config
    priced = [
        bid_price(cfg.price_floor, load, 2, cfg.bench_score, cfg.reference_bench, 500)
        for load in (1, 2)
    ]
    assert answer.price == priced[0] < priced[1]
    (answer,) = _answers(prov.receive(_announce(sim, "carol"), later))
    assert isinstance(answer, Bid)
    # As the strangers' bids expire the bound frees up.
    for job_id, work in list(prov.work.items()):
        prov.timer(TimerKey(TimerKind.BID, job_id), work.bid.message.expires_ms)
    (answer,) = _answers(
        prov.receive(_announce(sim, "mallory-x", deadline_ms=later + 99_000), later + 70_000)
    )
    assert isinstance(answer, Bid)


def test_the_answered_set_is_bounded() -> None:
    sim = Sim(4)
    prov = _provider()
    now = sim.now
    for i in range(MAX_ANSWERED + 50):
        prov.receive(_announce(sim, "alice", max_price=1), now + i)
    assert len(prov._answered) <= MAX_ANSWERED


def _scanned(prov: Provider, funded: dict[bytes, ledger.Escrow], who: bytes, now: int) -> int:
    """``load_for`` as it was computed before the counts: a scan of every bid."""
    share = prov.max_pending_per_requester
    counts: dict[bytes, list[int]] = {}
    for job_id, w in prov.work.items():
        if w.phase == WorkPhase.BIDDING and now < w.window_end_ms:
            escrow = funded.get(job_id)
            paid = escrow is not None and escrow.owner == w.spec.requester and escrow.is_open
            counts.setdefault(w.spec.requester, [0, 0])[0 if paid else 1] += 1
    own = others = unfunded = 0
    for requester, (f, u) in counts.items():
        if requester == who:
            own += f + u
        else:
            others += min(f, share)
            unfunded += u
    return own + min(others + min(unfunded, share), share)


def test_the_counts_agree_with_a_scan_of_every_bid() -> None:
    """The running counts against the scan they replace, through announcements, locks,
    awards, expiries, re-announcements and a change of slots."""
    rng = random.Random(11)
    sim = Sim(8)
    funded: dict[bytes, ledger.Escrow] = {}
    prov = _provider_with(funded, max_concurrency=3)
    who = ["alice", "bob", "carol", "dave"]
    raws: dict[bytes, tuple[str, bytes]] = {}
    now = sim.now
    for step in range(400):
        op = rng.random()
        if op < 0.4:
            name = rng.choice(who)
            window = rng.choice((200, 3_000, 15_000))
            raw = _announce(sim, name, bid_window_ms=window, deadline_ms=now + 60_000)
            raws[protocol.content_hash(raw)] = (name, raw)
            prov.receive(raw, now)
        elif op < 0.55 and raws:
            job_id = rng.choice(sorted(raws))
            name, raw = raws[job_id]
            owner = name if rng.random() < 0.8 else "mallory"
            funded[job_id] = ledger.Escrow(pub(key(owner)), 30_000, 30_000, 90, 100, 10_000, 1)
            prov.follow_ledger(step, funded.get, now)
        elif op < 0.7 and raws:
            job_id = rng.choice(sorted(raws))
            work = prov.work.get(job_id)
            if work is not None and work.phase == WorkPhase.BIDDING:
                name = raws[job_id][0]
                bid = work.bid
                award = protocol.Award(
                    job_id, pub(key(name)), prov.me, 0, bid.message.price, now + 30_000, bid.id
                )
                prov.receive(protocol.sign(award, key(name), CHAIN).raw, now)
        elif op < 0.8 and raws:
            prov.receive(raws[rng.choice(sorted(raws))][1], now)  # a re-announcement
        elif op < 0.82:
            prov.config = replace(prov.config, max_concurrency=rng.randint(1, 4))
        else:
            now += rng.choice((50, 500, 4_000))
            for job_id, work in list(prov.work.items()):
                if work.phase == WorkPhase.BIDDING and work.bid.message.expires_ms <= now:
                    prov.timer(TimerKey(TimerKind.BID, job_id), now)
        for name in (*who, "mallory"):
            assert prov.load_for(pub(key(name)), now) == _scanned(prov, funded, pub(key(name)), now)
        assert prov.active == sum(w.phase == WorkPhase.RUNNING for w in prov.work.values())
