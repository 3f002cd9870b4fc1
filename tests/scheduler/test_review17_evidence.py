"""Review round 17: what the requester takes as an output and reports must be what the
ledger takes as evidence. R17B-1: an ``ok`` Result committing to nothing (all zeros) was
outvoted and reported, the ledger refused the evidence (a failed run is no wrong answer),
so the cheater kept its stake and the report was counted against the honest requester.
R17B-2: in tolerance mode the evidence mixed determinism classes, which the ledger refuses
too."""

from __future__ import annotations

from ._harness import SLASH_AMOUNT, Sim, honest_output
from .test_tolerance_jobs import _tolerance

ESTABLISHED_STAKE = 1_000_000


def test_an_output_committing_to_nothing_is_refused_as_misbehaviour_and_replaced() -> None:
    sim = Sim(7)
    req = sim.add_requester(balance=1_000_000)
    stake = ESTABLISHED_STAKE + 2 * SLASH_AMOUNT
    cheat = sim.add_provider("zerocommit", price_floor=995, reputation=5, stake=stake)
    honest = [
        sim.add_provider(price_floor=1_000 + 10 * i, reputation=5, stake=stake) for i in range(2)
    ]
    spec = sim.spec(req, redundancy=2, max_retries=2)
    job = sim.submit(req, spec)
    sim.run_jobs([job])
    done = sim.done[job]
    assert done.status == "verified" and done.output == honest_output(spec)
    assert {p.provider for p in done.paid} == {h.pub for h in honest}
    assert [m.reason for m in sim.misbehaved if m.peer == cheat.pub] == [
        "reported an output with no commitment"
    ]
    assert sim.slashes == []  # nothing the ledger could take: no report made to be refused
    assert not sim.ledger.rejected


def test_tolerance_evidence_is_of_the_losers_determinism_class_only() -> None:
    # R17B-2: a cheater bidding a class of its own was outvoted by two winners of another;
    # the evidence mixed classes and the ledger refused the report. Now no report is made
    # without two paid winners of the loser's own class (attested against only).
    sim = Sim(11)
    req = sim.add_requester(balance=1_000_000)
    stake = ESTABLISHED_STAKE + 2 * SLASH_AMOUNT
    cheat = sim.add_provider(
        "cheat",
        price_floor=995,
        reputation=5,
        stake=stake,
        tolerance_jobs=True,
        determinism_class="ort-1.32.0/cpu/cheat/extended",
    )
    for i in range(2):
        sim.add_provider(price_floor=1_000 + 10 * i, reputation=5, stake=stake, tolerance_jobs=True)
    spec = _tolerance(sim.spec(req, redundancy=2, max_retries=2), 1_000, 0)
    job = sim.submit(req, spec)
    sim.run_jobs([job])
    assert sim.done[job].status == "verified"
    assert [s for s in sim.slashes if s.provider == cheat.pub] == []
    against = [a for a in sim.attests if a.subject == cheat.pub]
    assert against and not any(a.report for a in against)
    assert not sim.ledger.rejected
