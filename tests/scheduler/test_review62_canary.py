"""Review round 62, F2: a spot check's canary was awarded as a known-answer job (its window
closed in the block that locked it, one established bid enough), while its job waited for
its whole window: an established provider bidding on both saw one award at the lock and
one a window later, and the early one was the canary 100 times in 100, so it answered
every canary right and every job wrong. A canary is now awarded exactly as its job."""

from __future__ import annotations

import random
from typing import Any

import pytest

import protocol
from protocol import Award, Bid, InputRef, JobSpec, Requirements, VerificationPolicy, sign
from scheduler import Canary, Output, Requester, RequesterConfig, TimerKey, TimerKind
from scheduler._pricing import Reputation

from ..keys import key, pub
from ._harness import Sim, known_answer, spot_checked

CHAIN = "aimx-test"
CLS = "ort/cpu/extended"
P, Q = key("r62-established"), key("r62-newcomer")


def _awards(replication: str, redundancy: int, settled: int, seed: int) -> list[Any]:
    """Each job's awards as ``(time, provider, replica)``: the job's, then its canary's."""

    def reputation(who: bytes) -> Reputation:
        if who == pub(P):
            return Reputation(950, settled, failures=0, stake=2_000_000)
        return Reputation(500, 0)

    requester = key(f"r62-requester-{seed}")
    canary = Canary(
        "onnx",
        protocol.content_hash(b"canary model"),
        10,
        (InputRef("x", protocol.content_hash(b"canary input"), 4),),
        Output(b"answer", b"\x07" * 32, CLS),
    )
    config = RequesterConfig(
        key=requester,
        chain_id=CHAIN,
        commitment=lambda data: None,
        reputation=reputation,
        canaries=(canary,),
        rng=random.Random(seed),
        replication=replication,  # type: ignore[arg-type]
    )
    req = Requester(config)
    req.block(100, 0)
    now = 1_000_000
    spec = JobSpec(
        requester=pub(requester),
        nonce=seed.to_bytes(16, "big"),
        runtime="onnx",
        model_hash=protocol.content_hash(b"user model"),
        model_size=10,
        inputs=(InputRef("x", protocol.content_hash(b"input %d" % seed), 4),),
        requirements=Requirements("cpu", "CPUExecutionProvider", 0, "c1"),
        graph_opt_level="extended",
        threads=1,
        max_price=5_000,
        redundancy=redundancy,
        max_retries=1,
        verification=VerificationPolicy("exact", 0, 0, 1000),
        created_ms=now,
        bid_window_ms=2_000,
        deadline_ms=now + 120_000,
        escrow_expiry_height=400,
    )
    # the lookup names P, Q and 16 silent others: the job goes to the topic too
    others = [key(f"r62-other-{i}") for i in range(16)]
    job_id, _ = req.submit(spec, now, providers=[pub(P), pub(Q), *map(pub, others)])
    ids = sorted(req.jobs, key=lambda j: j != job_id)
    assert len(ids) == 2 and req.jobs[ids[1]].spot_check  # a canary at 1000 per mille
    seen: dict[bytes, list[tuple[int, bytes, int]]] = {j: [] for j in ids}

    def note(effects: list[Any], at: int) -> None:
        for e in effects:
            m = getattr(e, "message", None)
            if m is not None and isinstance(m.message, Award):
                a = m.message
                seen[a.job_id].append((at, a.provider, a.replica))

    t = now + 100
    for jid in ids:
        for k in (P, Q):
            bid = Bid(jid, pub(k), 1_000, t + 2_500, CLS, 1000, t + 10_000)
            note(req.receive(sign(bid, k, CHAIN).raw, t), t)
    t = now + 500  # both locks land in one block
    for jid in ids:
        note(req.escrow_locked(jid, t), t)
    t = now + 2_000  # the bid windows end
    for jid in ids:
        note(req.timer(TimerKey(TimerKind.BIDS, jid), t), t)
    return [seen[j] for j in ids]


@pytest.mark.parametrize(
    ("replication", "redundancy", "settled"),
    [
        ("fixed", 2, 30),  # 100 in 100 on the tree before
        ("adaptive", 1, 5),  # established, not trusted: 100 in 100 before
        ("adaptive", 2, 5),  # 100 in 100 before
        ("fixed", 1, 30),
        ("adaptive", 1, 30),  # trusted
    ],
)
def test_a_canary_is_awarded_as_its_job(replication: str, redundancy: int, settled: int) -> None:
    for seed in range(10):
        job, canary = _awards(replication, redundancy, settled, seed)
        assert job, "the job was awarded"
        if replication == "fixed" or redundancy == 2 or settled == 5:
            # no audit draw of its own: the same awards, at the same times
            assert canary == job, seed
        else:
            # a trusted provider's job may draw an audit (its own draw): the first award
            # still comes at the same time to the same provider
            assert canary[0] == job[0], seed


def test_a_canary_run_outside_its_answers_class_checks_nothing_and_catches_nobody() -> None:
    # Awarded as its job, a canary may run in a determinism class its answer is not in:
    # there its answer cannot judge (an exact job's outputs compare by commitment within
    # one class), so it is judged as a plain job: an honest provider of that class is
    # verified and paid, never caught.
    sim = Sim(62)
    req = sim.add_requester(canaries=(known_answer(sim),))
    other = sim.add_provider(price_floor=100, reputation=5, stake=1_000_000, determinism_class="x")
    job = sim.submit(req, sim.spec(req, redundancy=1, max_retries=0, spot_check_permille=1000))
    assert req.requester is not None
    checks = [j for j, jb in req.requester.jobs.items() if jb.spot_check]
    sim.run_jobs([job, *checks])
    for j in (job, *checks):
        assert sim.done[j].status == "verified"
        assert [p.provider for p in sim.done[j].paid] == [other.pub]
    assert req.requester.job(checks[0]).known is None  # its spot check was void
    assert other.pub not in req.requester.caught


def test_a_canary_in_its_answers_class_still_catches_a_wrong_provider() -> None:
    sim = Sim(63)
    provider, check = spot_checked(sim, "spotwise")
    assert sim.done[check].status != "verified" or provider.pub not in {
        p.provider for p in sim.done[check].paid
    }
    assert any(provider.pub in n.requester.caught for n in sim.nodes if n.requester is not None)


def test_an_audited_canary_both_of_whose_replicas_are_wrong_catches_both() -> None:
    # Round 68, K2: an audited canary whose two replicas agreed on a wrong output (one
    # person's pair, nothing more to award) was settled as an undecided audit, both set
    # aside, and caught nobody. Its known answer judges it: both are caught.
    sim = Sim(7)
    req = sim.add_requester(canaries=(known_answer(sim),), audit_permille=1000)
    pair = [
        sim.add_provider(
            "collude",
            price_floor=700 + 100 * i,
            reputation=5,
            stake=1_000_000,
            run_ms=1_000,
            max_concurrency=4,
        )
        for i in range(2)
    ]
    spec = sim.spec(req, redundancy=1, max_retries=1, max_price=2_000, spot_check_permille=1000)
    job = sim.submit(req, spec)
    assert req.requester is not None
    checks = [j for j, jb in req.requester.jobs.items() if jb.spot_check]
    sim.run_jobs([job, *checks])
    assert "contradicts the known answer" in sim.done[checks[0]].reason
    assert {p.pub for p in pair} <= set(req.requester.caught)  # the tree before: nobody
