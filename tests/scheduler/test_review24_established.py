"""Round 24 (R24B-1, R24B-3): an established provider awarded a replica stays established
for the job. Its settled jobs were read from the ledger again at every verdict, so that a
record lowered mid-job (the decay of an epoch boundary; before R24B-3, any stranger's
payment, which recomputed a stale count) made it a newcomer, and two fresh keys
outvoted it: their wrong output verified and paid, the honest provider slashed.

Real Requester and Provider machines on the real pure ledger (``_harness.Sim``)."""

from __future__ import annotations

import ledger
from tests.keys import pub

from ._harness import CHAIN, Sim, honest_output


def _sim() -> Sim:
    sim = Sim(7)
    sim.ledger.genesis = ledger.make_genesis(
        CHAIN, [pub(sim.ledger.coordinator)], reputation_half_life=5
    )
    return sim


def test_a_veteran_whose_record_decays_mid_job_is_not_outvoted_by_newcomers() -> None:
    sim = _sim()
    req = sim.add_requester()
    # 3 settled jobs, the probation threshold, until the epoch at height 5 halves them
    vet = sim.add_provider(reputation=3, stake=1_000_000, price_floor=1_000)
    n1 = sim.add_provider("collude", price_floor=500, run_ms=6_000)
    n2 = sim.add_provider("collude", price_floor=500, run_ms=6_000)
    spec = sim.spec(req, redundancy=2, max_retries=2, deadline_ms=60_000)
    job = sim.submit(req, spec, providers=[vet, n1, n2])
    sim.run_until(sim.now + 2_500)
    replicas = req.requester.job(job).replicas
    assert {r.provider for r in replicas} == {vet.pub, n1.pub, n2.pub}
    assert sim.ledger.height < 5  # awarded while established
    sim.run_jobs([job], limit_ms=400_000)
    assert sim.reputation(vet.pub).settled_jobs < 3  # a newcomer's record by the verdict
    done = sim.done[job]
    assert done.status != "verified", "two newcomers outvoted an established provider"
    assert not done.paid
    assert sim.ledger.state.account(vet.pub).stake == 1_000_000
    assert vet.pub not in [s.provider for s in sim.slashes]
    assert done.output is None or done.output == honest_output(spec)


def test_a_veteran_slashed_mid_job_by_framing_leaves_its_job_bonded() -> None:
    # Round 25, G3: two staked keys have the honest veteran slashed in a job of their own
    # (a documented limit), which takes its stake under probation_stake while another
    # requester's job it was awarded runs. Its vote goes with its stake; the job's bond
    # did too, and two free keys decided it: paid for a wrong output, the veteran
    # slashed again. The bond stays with the award, and such a job needs two
    # established outputs.
    sim = Sim(7)
    req = sim.add_requester()
    atk = sim.add_requester()
    vet = sim.add_provider(reputation=8, stake=1_000_000, price_floor=1_000, max_concurrency=2)
    n1 = sim.add_provider("collude", price_floor=500, run_ms=40_000)
    n2 = sim.add_provider("collude", price_floor=500, run_ms=40_000)
    c1 = sim.add_provider("collude", reputation=3, stake=1_000_000, price_floor=2_000)
    c2 = sim.add_provider("collude", reputation=3, stake=1_000_000, price_floor=3_000)
    spec = sim.spec(req, redundancy=2, max_retries=2, deadline_ms=150_000)
    job = sim.submit(req, spec, providers=[vet, n1, n2])
    sim.run_until(sim.now + 2_500)
    assert [r.established for r in req.requester.job(job).replicas if r.provider == vet.pub]
    framing = sim.submit(
        atk, sim.spec(atk, redundancy=2, max_retries=2, deadline_ms=40_000), providers=[vet, c1, c2]
    )
    sim.run_jobs([framing], limit_ms=120_000)
    sim.run_until(sim.now + 5_000)
    assert sim.ledger.state.account(vet.pub).stake < 1_000_000  # framed: under the bar
    assert sim.done.get(job) is None  # the honest job still runs
    sim.run_jobs([job], limit_ms=400_000)
    sim.run_until(sim.now + 5_000)
    done = sim.done[job]
    paid = {p.provider for p in done.paid}
    # Whatever decided it held two established outputs: the colluders had to bring both
    # staked keys into this job too (the documented "two staked keys decide" limit),
    # nothing gained by the framing. Before: paid the two free keys alone.
    assert done.status != "verified" or {c1.pub, c2.pub} <= paid, sorted(paid)
