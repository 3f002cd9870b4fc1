"""Round 28, J3: a slash's witnesses are the winners holding the most as the ledger counts
it, stake and unbonding stake together. Ranked by bonded stake alone, an honest winner
that unstaked after its award ranked below the cheater's own free key (stake 10), which
then set the slash's bond: the coordinator answered "nothing staked".

``punish`` reads each winner through the daemon's own reading of the ledger
(``Reputation(*state.provider_record(p))``) on a real state."""

from __future__ import annotations

from types import SimpleNamespace

import ledger
import protocol
from scheduler._requester_settle import punish
from tests.keys import key, pub

from ._harness import Sim, opening_state, reputation

RIGHT, WRONG = b"R" * 32, b"W" * 32


def _replica(k: object, commitment: bytes) -> SimpleNamespace:
    result = protocol.Result(
        job_id=bytes(32),
        provider=pub(k),
        replica=0,
        outcome="ok",
        message="",
        output_commitment=commitment,
        output_hash=bytes(32),
        output_size=0,
        key_hash=bytes(32),
        determinism_class="c",
        usage=protocol.Usage(cpu_ms=1, wall_ms=1, peak_memory_kb=0, gpu_ms=0),
        finished_ms=1,
    )
    return SimpleNamespace(provider=pub(k), result=protocol.sign(result, k, "aimx-test"))


def test_a_winner_unbonding_its_stake_still_outranks_an_unbonded_key_as_witness() -> None:
    cheat, free, v1, v2 = key("cheat"), key("cheat's free key"), key("v1"), key("v2")
    state = opening_state(
        Sim(1).ledger.genesis,
        {
            pub(cheat): ledger.Account(stake=1_000_000),
            pub(free): ledger.Account(stake=10),
            pub(v1): ledger.Account(stake=1_000_000),
            pub(v2): ledger.Account(unbonding=((50, 1_000_000),)),  # unstaked after its award
        },
    )
    config = SimpleNamespace(
        reputation=lambda p: reputation(state, p), slash_outvoted=True, caught_limit=100
    )
    winners = [_replica(v2, RIGHT), _replica(free, RIGHT), _replica(v1, RIGHT)]
    job = SimpleNamespace(id=bytes(32), known=None)
    verdict = SimpleNamespace(reference=SimpleNamespace(commitment=RIGHT))
    (slash, _attest) = punish(job, verdict, [_replica(cheat, WRONG)], winners, config, {}, 0)
    ranked = [e.message.provider for e in slash.evidence[1:]]
    assert set(ranked[:2]) == {pub(v1), pub(v2)} and ranked[2] == pub(free)


def test_unbonding_released_before_a_slash_can_land_does_not_rank_a_witness_first() -> None:
    # Round 29, K2: ranked by all it unbonds, the cheater's helper, unbonding a lot released
    # just after the close, was named first, and the coordinator found it holding nothing.
    cheat, helper, v1, v2 = key("cheat"), key("helper"), key("v1"), key("v2")
    state = opening_state(
        Sim(1).ledger.genesis,
        {
            pub(cheat): ledger.Account(stake=1_000_000),
            pub(helper): ledger.Account(unbonding=((12, 3_000_000),)),
            pub(v1): ledger.Account(stake=1_000_000),
            pub(v2): ledger.Account(stake=1_000_000),
        },
    )
    config = SimpleNamespace(
        reputation=lambda p: reputation(state, p), slash_outvoted=True, caught_limit=100
    )
    winners = [_replica(helper, RIGHT), _replica(v1, RIGHT), _replica(v2, RIGHT)]
    job = SimpleNamespace(id=bytes(32), known=None)
    verdict = SimpleNamespace(reference=SimpleNamespace(commitment=RIGHT))
    (slash, _attest) = punish(job, verdict, [_replica(cheat, WRONG)], winners, config, {}, 5)
    ranked = [e.message.provider for e in slash.evidence[1:]]
    assert ranked == [pub(v1), pub(v2), pub(helper)]
