"""Random fault schedules: whatever happens, every escrow ends and credits are conserved."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import EscrowStatus

from ._harness import BLOCK_MS, Sim, honest_output

outage = st.one_of(
    st.none(),
    st.tuples(st.integers(0, 12_000), st.one_of(st.none(), st.integers(500, 40_000))),
)


@st.composite
def schedules(draw: st.DrawFn) -> dict[str, object]:
    return {
        "seed": draw(st.integers(0, 2**32)),
        "loss": draw(st.sampled_from([0.0, 0.05, 0.15, 0.3])),
        "providers": draw(
            st.lists(
                st.tuples(
                    st.sampled_from(["honest", "honest", "cheat"]),
                    st.integers(100, 5_000),  # price floor
                    st.integers(0, 6),  # settled jobs before
                    st.integers(100, 3_000),  # run time
                    outage,
                ),
                min_size=1,
                max_size=5,
            )
        ),
        "requester_outage": draw(
            st.one_of(st.none(), st.tuples(st.integers(0, 12_000), st.integers(500, 40_000)))
        ),
        "jobs": draw(
            st.lists(st.tuples(st.integers(1, 3), st.integers(0, 3)), min_size=1, max_size=3)
        ),
    }


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules())
def test_random_faults_end_every_escrow_and_conserve_credits(plan: dict[str, object]) -> None:
    sim = Sim(plan["seed"], loss=plan["loss"])  # type: ignore[arg-type]
    req = sim.add_requester(balance=10_000_000)
    provs = []
    for behaviour, floor, rep, run_ms, down in plan["providers"]:  # type: ignore[attr-defined]
        node = sim.add_provider(behaviour, price_floor=floor, reputation=rep, run_ms=run_ms)
        provs.append(node)
        if down is not None:
            start, length = down
            sim.go_offline(
                node, sim.now + start, None if length is None else sim.now + start + length
            )
    if plan["requester_outage"] is not None:
        start, length = plan["requester_outage"]  # type: ignore[misc]
        sim.go_offline(req, sim.now + start, sim.now + start + length)
    specs = {}
    for redundancy, retries in plan["jobs"]:  # type: ignore[attr-defined]
        spec = sim.spec(req, redundancy=redundancy, max_retries=retries)
        specs[sim.submit(req, spec)] = spec
    last_expiry = max(s.escrow_expiry_height for s in specs.values())
    sim.run_jobs(list(specs), limit_ms=(last_expiry + 60) * BLOCK_MS)

    sim.ledger.check_conservation()
    cheats = {p.pub for p in provs if p.behaviour == "cheat"}
    for job_id, spec in specs.items():
        escrow = sim.ledger.escrow(job_id)
        if escrow is None:  # the lock never happened (the requester was away): nothing held
            assert sim.done.get(job_id) is None or sim.done[job_id].status == "failed"
            continue
        assert escrow.status in (EscrowStatus.SETTLED, EscrowStatus.REFUNDED), "never ended"
        # Nobody is paid for a result the requester never received, or never receipted
        # (the fair exchange: a receipt binds the requester before the bytes travel; on a
        # lossy link they may never arrive, and the holder claims).
        machine = req.requester
        assert machine is not None
        receipted = {r.provider for r in machine.job(job_id).replicas if r.receipt is not None}
        assert {p for p, _ in escrow.paid} <= sim.delivered.get(job_id, set()) | receipted
        done = sim.done.get(job_id)
        assert done is not None, "the requester never learnt the job's outcome"
        if done.status == "verified" and spec.redundancy >= 2:
            assert done.output == honest_output(spec)  # lone cheaters never agree
            assert not {p.provider for p in done.paid} & cheats
