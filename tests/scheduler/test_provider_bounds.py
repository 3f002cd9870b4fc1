"""The provider against announcements crafted to hurt it (issue 14, attacks 2 and 8):
absurd times are refused unanswered, a far bid window does not keep the provider busy,
one requester cannot take every open bid, and the answered set stays bounded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import protocol
from protocol import Bid, InputRef, JobSpec, NoBid, Requirements, VerificationPolicy
from scheduler import Misbehaved, Provider, ProviderConfig, Send
from scheduler._provider import MAX_ANSWERED

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

    # The same load from requesters that locked their escrows is real: busy.
    sim, prov = Sim(6), _provider_with(funded, max_concurrency=2)
    for i in range(2):
        for _ in range(2):
            spec = _announce(sim, f"bob-{i}")
            funded[protocol.content_hash(spec)] = _Escrow(pub(key(f"bob-{i}")))
            prov.receive(spec, now)
    (busy,) = _answers(prov.receive(_announce(sim, "alice"), now))
    assert isinstance(busy, NoBid) and busy.reason == "busy"


def _provider_with(funded: dict[bytes, _Escrow], **fields: int) -> Provider:
    return Provider(
        ProviderConfig(
            key=key("provider"),
            chain_id=CHAIN,
            capability_classes=(CLASS,),
            escrow_of=lambda job_id: funded.get(job_id),  # type: ignore[arg-type,return-value]
            **fields,  # type: ignore[arg-type]
        )
    )


def test_the_answered_set_is_bounded() -> None:
    sim = Sim(4)
    prov = _provider()
    now = sim.now
    for i in range(MAX_ANSWERED + 50):
        prov.receive(_announce(sim, "alice", max_price=1), now + i)
    assert len(prov._answered) <= MAX_ANSWERED
