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
        determinism_class="ort-1.32.0/cpu/generic/extended",
        usage=protocol.Usage(cpu_ms=1, wall_ms=1, peak_memory_kb=0, gpu_ms=0),
        finished_ms=1,
    )
    return SimpleNamespace(provider=pub(k), result=protocol.sign(result, k, "aimx-test"))


def _witnesses_named(
    cheat: object, winners: list[tuple[object, ledger.Account]], height: int
) -> list[bytes]:
    """The providers ``punish`` names as witnesses, in its order, of ``cheat`` (staked,
    outvoted) against ``winners`` (agreeing, holding as given), at the last block
    ``height``, each read as the daemon reads the ledger."""
    accounts = {pub(cheat): ledger.Account(stake=1_000_000)}
    accounts.update({pub(k): account for k, account in winners})
    state = opening_state(Sim(1).ledger.genesis, accounts)
    config = SimpleNamespace(
        reputation=lambda p: reputation(state, p), slash_outvoted=True, caught_limit=100
    )
    job = SimpleNamespace(id=bytes(32), known=None, spec=SimpleNamespace(runtime="onnx"))
    verdict = SimpleNamespace(reference=SimpleNamespace(commitment=RIGHT))
    replicas = [_replica(k, RIGHT) for k, _ in winners]
    (slash, _attest) = punish(job, verdict, [_replica(cheat, WRONG)], replicas, config, {}, height)
    return [e.message.provider for e in slash.evidence[1:]]


def test_a_winner_unbonding_its_stake_still_outranks_an_unbonded_key_as_witness() -> None:
    cheat, free, v1, v2 = key("cheat"), key("cheat's free key"), key("v1"), key("v2")
    winners = [
        (v2, ledger.Account(unbonding=((50, 1_000_000),))),  # unstaked after its award
        (free, ledger.Account(stake=10)),
        (v1, ledger.Account(stake=1_000_000)),
    ]
    ranked = _witnesses_named(cheat, winners, 0)
    assert set(ranked[:2]) == {pub(v1), pub(v2)} and ranked[2] == pub(free)


def test_unbonding_released_before_a_slash_can_land_does_not_rank_a_witness_first() -> None:
    # Round 29, K2: ranked by all it unbonds, the cheater's helper, unbonding a lot released
    # just after the close, was named first, and the coordinator found it holding nothing.
    cheat, helper, v1, v2 = key("cheat"), key("helper"), key("v1"), key("v2")
    winners = [
        (helper, ledger.Account(unbonding=((12, 3_000_000),))),
        (v1, ledger.Account(stake=1_000_000)),
        (v2, ledger.Account(stake=1_000_000)),
    ]
    assert _witnesses_named(cheat, winners, 5) == [pub(v1), pub(v2), pub(helper)]
