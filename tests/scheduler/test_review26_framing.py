"""Round 26, H1: framing an honest veteran needed no stake. A requester's own software
awards the veteran and two free keys, pays the free keys (its own money back) and
reports the veteran outvoted: the ledger slashed it on any two paid agreeing Results.
Its stake under ``probation_stake``, it was a newcomer, and free keys then decided an
honest requester's job: paid for a wrong output, the veteran slashed again. A
``failed_verification`` slash now takes no more than each witness has bonded, and an
unbonded majority's takes nothing (ledger/_evidence.py, ``witness_bond``).

Real Requester and Provider machines on the real pure ledger (``_harness.Sim``)."""

from __future__ import annotations

from typing import Any

from ._harness import Sim, honest_output


def test_two_free_keys_paid_by_their_own_requester_frame_nobody() -> None:
    sim = Sim(11)
    req = sim.add_requester()
    attacker = sim.add_requester(probation_jobs=0, probation_stake=0)  # its own policy
    vet = sim.add_provider(reputation=8, stake=1_000_000, price_floor=1_000)
    f1 = sim.add_provider("collude", price_floor=1_500)
    f2 = sim.add_provider("collude", price_floor=1_500)
    framing = sim.submit(
        attacker,
        sim.spec(attacker, redundancy=2, max_retries=2, deadline_ms=30_000),
        providers=[vet, f1, f2],
    )
    sim.run_jobs([framing], limit_ms=120_000)
    sim.run_until(sim.now + 5_000)
    assert vet.pub in [s.provider for s in sim.slashes]  # reported, and the ledger took it
    assert sim.ledger.state.account(vet.pub).stake == 1_000_000  # but it took nothing
    assert sim.reputation(vet.pub).failures == 0
    job = sim.submit(
        req, sim.spec(req, redundancy=2, max_retries=2, deadline_ms=60_000), providers=[vet, f1, f2]
    )
    sim.run_jobs([job], limit_ms=200_000)
    sim.run_until(sim.now + 5_000)
    done = sim.done[job]
    assert done.status != "verified", "free keys decided a job an established provider bid for"
    assert not done.paid
    assert sim.ledger.state.account(vet.pub).stake == 1_000_000


def _blocked(vets: int, free: int, redundancy: int, retries: int) -> tuple[Sim, Any, Any]:
    sim = Sim(5)
    req = sim.add_requester()
    honest = [
        sim.add_provider(reputation=8, stake=1_000_000, price_floor=1_000) for _ in range(vets)
    ]
    keys = [sim.add_provider("collude", price_floor=500) for _ in range(free)]
    spec = sim.spec(req, redundancy=redundancy, max_retries=retries, deadline_ms=60_000)
    job = sim.submit(req, spec, providers=[*honest, *keys])
    sim.run_jobs([job], limit_ms=200_000)
    sim.run_until(sim.now + 5_000)
    return sim, sim.done[job], spec


def test_free_keys_agreeing_on_a_wrong_output_do_not_block_established_providers() -> None:
    # Round 26, H2: free keys bid lowest and agree on one wrong output. Counted among all
    # outputs, their group kept the established providers' agreement from a majority, the
    # next awards went to more of them, and the job failed unpaid, whatever the number of
    # honest established providers (a free denial of every job of the class). Now an
    # agreement of the established outputs a job needs decides it, and while it is not
    # reached only established bids are awarded.
    for vets, free, redundancy, retries in ((2, 4, 2, 2), (3, 4, 2, 2), (4, 8, 3, 6)):
        sim, done, spec = _blocked(vets, free, redundancy, retries)
        assert done.status == "verified", (vets, free, done.reason)
        assert done.output == honest_output(spec)
        assert len(done.paid) == redundancy
        assert all(sim.reputation(p.provider).stake == 1_000_000 for p in done.paid)


def test_a_newcomer_still_completes_an_established_agreement_short_of_the_redundancy() -> None:
    # Round 27, I2: with only established bids offered while such a job had no verdict,
    # two agreeing established outputs at redundancy 3 could never be completed once the
    # cheapest honest newcomer went offline: the job ended unverified, not verified.
    # Established bids come first there, newcomers after.
    sim = Sim(5)
    req = sim.add_requester()
    vets = [sim.add_provider(reputation=8, stake=1_000_000, price_floor=1_000) for _ in range(2)]
    flaky = sim.add_provider(price_floor=500)  # honest newcomer, the cheapest; goes offline
    newcomers = [sim.add_provider(price_floor=1_200) for _ in range(3)]
    spec = sim.spec(req, redundancy=3, max_retries=4, deadline_ms=60_000)
    job = sim.submit(req, spec, providers=[*vets, flaky, *newcomers])
    sim.go_offline(flaky, sim.now + 300)
    sim.run_jobs([job], limit_ms=200_000)
    sim.run_until(sim.now + 5_000)
    done = sim.done[job]
    assert done.status == "verified", done.reason
    assert done.output == honest_output(spec) and len(done.paid) == 3


def test_a_cheaters_unbonded_key_among_the_winners_does_not_void_its_slash() -> None:
    # Round 27, I3: the evidence named the first winners whatever their stake, and the
    # cheater's own free key, bidding lowest with the right output, was one of them: the
    # slash took nothing. The two best-bonded winners witness now.
    sim = Sim(7)
    req = sim.add_requester()
    vets = [sim.add_provider(reputation=8, stake=1_000_000, price_floor=1_000) for _ in range(2)]
    cheat = sim.add_provider("collude", reputation=8, stake=1_000_000, price_floor=900)
    own = sim.add_provider(price_floor=500)  # its free key: the right output, no stake
    spec = sim.spec(req, redundancy=3, max_retries=4, deadline_ms=60_000)
    job = sim.submit(req, spec, providers=[*vets, cheat, own])
    sim.run_jobs([job], limit_ms=200_000)
    sim.run_until(sim.now + 10_000)
    assert sim.done[job].status == "verified"
    assert sim.ledger.state.account(cheat.pub).stake < 1_000_000
    assert sim.reputation(cheat.pub).failures == 4
