"""Pure parts: verification verdicts, award order, pricing, matching and the reports."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import Bid, NoBid, VerificationPolicy
from scheduler import (
    NEWCOMER,
    BidOutcome,
    Output,
    ProviderConfig,
    Reputation,
    Seen,
    award_key,
    bid_price,
    commitments_equal,
    explain_no_bids,
    judge,
    match,
    why_no_jobs,
)

from ..keys import key
from ._harness import CHAIN, Sim

POLICY = VerificationPolicy(mode="exact", rtol_e9=0, atol_e9=0, spot_check_permille=0)
A = Output(b"a", b"A" * 32, "cls")
B = Output(b"b", b"B" * 32, "cls")
C = Output(b"c", b"C" * 32, "cls")


def _judge(outs: list[Output], required: int, known: Output | None = None) -> tuple[object, ...]:
    v = judge(
        list(enumerate(outs)),
        required=required,
        policy=POLICY,
        compare=commitments_equal,
        known=known,
    )
    return (v.status, v.accepted, v.rejected)


def test_judge_majorities() -> None:
    assert _judge([A, A], 2) == ("verified", (0, 1), ())
    assert _judge([A, B], 2) == ("disagree", (), ())
    assert _judge([A, B, A], 2) == ("verified", (0, 2), (1,))
    assert _judge([A], 2) == ("too_few", (0,), ())
    assert _judge([A], 1) == ("verified", (0,), ())
    assert _judge([A, B, C], 1) == ("disagree", (), ())
    assert _judge([A, A, B, B], 2) == ("disagree", (), ())  # a tie is no majority
    assert _judge([], 1) == ("too_few", (), ())


def test_judge_with_known_answer() -> None:
    assert _judge([B, A], 3, known=A) == ("verified", (1,), (0,))
    assert _judge([B], 1, known=A) == ("disagree", (), (0,))
    assert _judge([], 1, known=A) == ("too_few", (), ())


def test_tolerance_comparison_is_injected() -> None:
    # A comparison that treats outputs of equal length as equal (like a tolerance would).
    def close(a: Output, b: Output, p: VerificationPolicy) -> bool:
        return len(a.data) == len(b.data)

    v = judge([(0, A), (1, B)], required=2, policy=POLICY, compare=close)
    assert v.status == "verified" and v.reference == A


def _bid(price: int, finish: int, who: int) -> Bid:
    return Bid(bytes(32), bytes([who]) * 32, price, finish, "cls", 1, 10_000)


def test_award_order_price_reputation_time_and_tie_break() -> None:
    good = Reputation(1000, 10)
    bad = Reputation(0, 10)
    now, deadline = 0, 10_000
    cheap = award_key(_bid(1_000, 1_000, 1), good, 10_000, now, deadline)
    dear = award_key(_bid(2_000, 1_000, 2), good, 10_000, now, deadline)
    assert cheap < dear
    # A zero reputation doubles the effective price.
    assert award_key(_bid(1_000, 1_000, 1), bad, 10_000, now, deadline) > dear
    # A later finish costs up to a quarter of max_price.
    slow = award_key(_bid(1_000, 9_000, 3), good, 10_000, now, deadline)
    assert slow > cheap and slow[0] == 1_000 + 10_000 * 9_000 // 10_000 // 4
    # Equal cost and finish: the provider key's hash decides, the same way every time.
    t1 = award_key(_bid(1_000, 1_000, 4), good, 10_000, now, deadline)
    t2 = award_key(_bid(1_000, 1_000, 5), good, 10_000, now, deadline)
    assert t1[:2] == t2[:2] and t1 != t2


@settings(max_examples=50)
@given(
    st.integers(0, 10**9),
    st.integers(0, 1024),
    st.integers(1, 1024),
    st.integers(0, 10**6),
    st.integers(1, 10**6),
    st.integers(0, 2000),
)
def test_bid_price_never_below_floor_and_rises_with_load(
    floor: int, active: int, conc: int, bench: int, ref: int, markup: int
) -> None:
    p = bid_price(floor, active, conc, bench, ref, markup)
    assert p >= floor
    assert bid_price(floor, active + 1, conc, bench, ref, markup) >= p


def _config(**kw: object) -> ProviderConfig:
    kw.setdefault("capability_classes", ("onnx.cpu.m4",))
    return ProviderConfig(key=key("provider"), chain_id=CHAIN, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("config", "kw", "reason"),
    [
        ({}, {"draining": True}, "shutting_down"),
        ({"capability_classes": ("x",)}, {}, "class_not_served"),
        ({"runtimes": ("torchscript",)}, {}, "runtime_unsupported"),
        ({"execution_providers": ("CUDAExecutionProvider",)}, {}, "requirements_unmet"),
        ({"memory_mb": 100}, {}, "requirements_unmet"),
        ({"accepts_untrusted": False}, {}, "untrusted_refused"),
        ({"price_floor": 10**6}, {}, "price_below_floor"),
        ({}, {"run_ms": 10**9}, "deadline_too_short"),
        ({}, {"active": 1}, "busy"),
        ({}, {}, None),
    ],
)
def test_match_reasons(
    config: dict[str, object], kw: dict[str, object], reason: str | None
) -> None:
    sim = Sim(0)
    spec = sim.spec(sim.add_requester())
    args: dict[str, object] = {"active": 0, "now_ms": sim.now, "run_ms": 100, "draining": False}
    args.update(kw)
    got = match(spec, _config(**config), **args)  # type: ignore[arg-type]
    assert (got[0] if got else None) == reason
    if got:
        assert got[1]  # every refusal says why


def test_gpu_job_needs_a_gpu() -> None:
    from dataclasses import replace

    sim = Sim(0)
    spec = sim.spec(sim.add_requester())
    spec = replace(spec, requirements=replace(spec.requirements, device="gpu"))
    args = {"active": 0, "now_ms": sim.now, "run_ms": 100, "draining": False}
    assert match(spec, _config(), **args) == ("requirements_unmet", "no GPU")  # type: ignore[arg-type]
    assert match(spec, _config(gpu_memory_mb=8_000), **args) is None  # type: ignore[arg-type]


def test_no_bid_report() -> None:
    nb = [
        NoBid(bytes(32), bytes([1]) * 32, "busy", "", 100),
        NoBid(bytes(32), bytes([2]) * 32, "price_below_floor", "", 7_000),
        NoBid(bytes(32), bytes([3]) * 32, "price_below_floor", "", 5_000),
        NoBid(bytes(32), bytes([3]) * 32, "price_below_floor", "", 5_000),  # a duplicate
    ]
    r = explain_no_bids(nb, providers_asked=3)
    assert r.reasons == (("price_below_floor", 2), ("busy", 1))
    assert r.lowest_floor == 5_000 and "5000" in r.advice[0]
    assert explain_no_bids([], 0).primary == "no_provider_known"
    assert explain_no_bids([], 4).primary == "no_response"


def test_why_no_jobs() -> None:
    history = [Seen(bytes([i]) * 32, 1_000 + i, "price_below_floor", 500, 0) for i in range(3)] + [
        Seen(bytes([9]) * 32, 2_000, BidOutcome.LOST, 5_000, 4_000),
        Seen(bytes(32), 1, "busy", 1, 0),
    ]
    r = why_no_jobs(history, now_ms=3_000, window_ms=2_500)
    assert r.announcements == 4  # the one at t=1 is outside the window
    assert r.outcomes[0] == ("price_below_floor", 3)
    assert any("lower price_floor" in h for h in r.hints)
    assert any("4000" in h for h in r.hints)
    empty = why_no_jobs([], now_ms=3_000, window_ms=1_000)
    assert empty.announcements == 0 and "no job announcements" in empty.hints[0]
    assert NEWCOMER.settled_jobs == 0
