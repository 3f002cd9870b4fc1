"""Review round 7, R7-1: the coordinator queued a slash for every report that passed, its
amount read from the committed state. A requester reporting its own 1-micro-credit sybils
across its own closed escrows queued hundreds of slashes of which all but the first per
sybil were refused in a block, one a block, each dragging the coordinator's later
transactions out with it; an honest report's slash (answered ``slashing``, so never sent
again) landed after the cheat's unbonding was released. Now a coordinator has one slash of
an offender in flight at a time and at most ``MAX_PER_REPORTER`` of one reporter.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest

import ledger
import protocol
from node.daemon.reports import (
    DECIDED,
    FLIGHT_BLOCKS,
    MAX_PER_REPORTER,
    NOT_SLASHABLE,
    Reports,
)

from ...keys import key, pub
from .test_reports import CHAIN
from .test_review6_reports import _result

ATTACKER = key("attacker")
HONEST = key("honest requester")
CHEAT = key("the cheat")
CHEAT_JOB = bytes([200]) * 32


class _Coordinator:
    """A coordinator's view: closed escrows (each owned by whoever the test says), the
    offenders' stakes, the height; what it submits."""

    def __init__(self) -> None:
        self.escrows: dict[bytes, SimpleNamespace] = {}
        self.stakes: dict[bytes, int] = {}
        state = SimpleNamespace(
            escrow=self.escrows.get,
            account=lambda who: SimpleNamespace(
                stake=self.stakes.get(who, 0), unbonding_total=0, unbonding=()
            ),
            height=10,
        )
        self.ledger = SimpleNamespace(state=state)
        self.chain_id = CHAIN
        self.me = pub(key("coordinator"))
        self.roles = ("coordinator",)
        self.config = SimpleNamespace(
            coordinator=SimpleNamespace(slash_amount=1_000_000, witness_floor=1_000_000)
        )
        self.submitted: list[ledger.Slash] = []
        self.conduct = SimpleNamespace(misbehaved=lambda peer, why: None)

    def closed(self, job: bytes, owner: Any) -> bytes:
        self.escrows[job] = SimpleNamespace(
            owner=pub(owner), slashed=set(), is_open=False, prune_height=10**9
        )
        return job

    def submit_tx(self, payload: ledger.Slash) -> None:
        self.submitted.append(payload)

    def land(self, slash: ledger.Slash, job: bytes) -> None:
        """The block that applies ``slash``."""
        self.escrows[job].slashed.add(slash.offender)
        self.stakes[slash.offender] -= slash.amount


async def _report(reports: Reports, reporter: Any, offender: Any, job: bytes) -> str:
    request = protocol.pack([pub(offender), "failed_verification", [_result(offender, job)]])
    [answer] = protocol.unpack(await reports.serve(pub(reporter), request))
    return str(answer)


@pytest.fixture(autouse=True)
def _evidence_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    # the ledger's own evidence rule is tested in tests/ledger; here every report passes it
    monkeypatch.setattr(ledger, "check_slash_evidence", lambda state, slash, **_: None)


async def test_a_flood_of_own_sybils_reports_queues_little_and_the_cheats_slash_goes_next() -> None:
    node = _Coordinator()
    reports = Reports(node)  # type: ignore[arg-type]
    sybils = [key(f"sybil-{i}") for i in range(20)]
    for sybil in sybils:
        node.stakes[pub(sybil)] = 10_000  # the least worth a slash (1 micro-credit: R9-4)
    answers: dict[str, int] = {}
    for m in range(20):  # 20 escrows of the attacker's, each reporting all 20 sybils
        job = node.closed(bytes([m]) * 32, ATTACKER)
        for sybil in sybils:
            answer = await _report(reports, ATTACKER, sybil, job)
            answers[answer] = answers.get(answer, 0) + 1
    # one slash per sybil at most, and at most MAX_PER_REPORTER of this reporter's
    assert len(node.submitted) == MAX_PER_REPORTER
    assert len({s.offender for s in node.submitted}) == MAX_PER_REPORTER
    assert answers["slashing"] == MAX_PER_REPORTER
    # the honest report of the cheat is taken at once, its slash the next one queued
    node.stakes[pub(CHEAT)] = 1_000_000
    node.closed(CHEAT_JOB, HONEST)
    assert await _report(reports, HONEST, CHEAT, CHEAT_JOB) == "slashing"
    assert node.submitted[-1].offender == pub(CHEAT)
    assert node.submitted[-1].amount == 1_000_000


async def test_a_second_report_of_an_offender_waits_for_the_first_and_is_reckoned_after_it() -> (
    None
):
    node = _Coordinator()
    reports = Reports(node)  # type: ignore[arg-type]
    node.stakes[pub(CHEAT)] = 1_500_000
    first = node.closed(bytes([1]) * 32, HONEST)
    second = node.closed(bytes([2]) * 32, HONEST)
    assert await _report(reports, HONEST, CHEAT, first) == "slashing"
    assert await _report(reports, HONEST, CHEAT, second) == "slash pending"  # undecided
    node.land(node.submitted[0], first)
    assert await _report(reports, HONEST, CHEAT, second) == "slashing"
    assert [s.amount for s in node.submitted] == [1_000_000, 500_000]  # what the first left
    node.land(node.submitted[1], second)
    assert await _report(reports, HONEST, CHEAT, second) == "already reported"


async def test_a_slash_that_never_lands_frees_its_offender_after_its_lifetime() -> None:
    node = _Coordinator()
    reports = Reports(node)  # type: ignore[arg-type]
    node.stakes[pub(CHEAT)] = 100_000
    first = node.closed(bytes([1]) * 32, HONEST)
    second = node.closed(bytes([2]) * 32, HONEST)
    assert await _report(reports, HONEST, CHEAT, first) == "slashing"
    assert await _report(reports, HONEST, CHEAT, second) == "slash pending"
    node.ledger.state.height += FLIGHT_BLOCKS + 1  # the first was refused or lost
    assert await _report(reports, HONEST, CHEAT, second) == "slashing"
    assert len(node.submitted) == 2


async def test_stake_released_before_a_slash_can_land_is_not_slashed() -> None:
    # Round 8, R8-1: offenders whose unbonding is released in the next block made every
    # slash of them doomed, refused one a block, the coordinator's queue dragged again.
    node = _Coordinator()
    reports = Reports(node)  # type: ignore[arg-type]
    soon = node.ledger.state.height + 1
    node.ledger.state.account = lambda who: SimpleNamespace(
        stake=0, unbonding_total=1_000_000, unbonding=((soon, 1_000_000),)
    )
    job = node.closed(bytes([1]) * 32, ATTACKER)
    assert await _report(reports, ATTACKER, key("releasing"), job) == "nothing staked"
    later = node.ledger.state.height + 100
    node.ledger.state.account = lambda who: SimpleNamespace(
        stake=0, unbonding_total=1_000_000, unbonding=((soon, 400), (later, 999_600))
    )
    assert await _report(reports, HONEST, CHEAT, node.closed(CHEAT_JOB, HONEST)) == "slashing"
    assert [s.amount for s in node.submitted] == [999_600]  # what is still held then
    assert node.submitted == node.submitted[:1]


async def test_stake_released_while_a_slash_waits_in_flight_is_not_counted() -> None:
    # Round 10, R10-1: offenders holding the floor in unbonding released 8 blocks on were
    # answered "slashing"; behind 1,024 slashes in flight theirs landed after the release,
    # took nothing and freed their places, and honest reports were answered busy. R10-5:
    # counted to 32 blocks whatever the queue, a cheat that unstaked at its award escaped a
    # report 70 blocks later. What is counted follows the queue ahead of the slash.
    node = _Coordinator()
    reports = Reports(node)  # type: ignore[arg-type]
    h = node.ledger.state.height
    releasing = pub(key("releasing"))
    stakes = node.stakes

    def account(who: bytes) -> SimpleNamespace:
        if who == releasing:
            return SimpleNamespace(stake=0, unbonding_total=10_000, unbonding=((h + 8, 10_000),))
        return SimpleNamespace(stake=stakes.get(who, 0), unbonding_total=0, unbonding=())

    node.ledger.state.account = account
    # nothing ahead: the slash lands within a few blocks, before the release
    job = node.closed(bytes([1]) * 32, HONEST)
    assert await _report(reports, HONEST, key("releasing"), job) == "slashing"
    # a full queue ahead (960 slashes: 15 blocks of them): it would land after it
    node.submitted.clear()
    reports = Reports(node)  # type: ignore[arg-type]
    for r in range(60):
        reporter = key(f"flood reporter {r}")
        for i in range(MAX_PER_REPORTER):
            offender = key(f"flood offender {r} {i}")
            stakes[pub(offender)] = 10_000
            flood = node.closed(bytes([200 - r, i + 1]) * 16, reporter)
            assert await _report(reports, reporter, offender, flood) == "slashing"
    assert await _report(reports, HONEST, key("releasing"), job) == "nothing staked"


async def test_evidence_whose_escrow_leaves_the_state_before_a_slash_lands_is_too_late() -> None:
    node = _Coordinator()
    reports = Reports(node)  # type: ignore[arg-type]
    node.stakes[pub(CHEAT)] = 100_000
    job = node.closed(CHEAT_JOB, HONEST)
    node.escrows[job].prune_height = node.ledger.state.height + 1
    assert await _report(reports, HONEST, CHEAT, job) == "too late: the escrow leaves the ledger"
    assert node.submitted == []


async def test_a_slash_whose_escrow_left_the_state_keeps_its_place_until_its_lifetime() -> None:
    # R8-1's worse variant: escrows pruned in the next block freed the per-reporter and
    # total places at once while their refused slashes stayed queued.
    node = _Coordinator()
    reports = Reports(node)  # type: ignore[arg-type]
    sybils = [key(f"pruned-{i}") for i in range(MAX_PER_REPORTER + 1)]
    for sybil in sybils:
        node.stakes[pub(sybil)] = 10_000
    jobs = [node.closed(bytes([i]) * 32, ATTACKER) for i in range(len(sybils))]
    for sybil, job in zip(sybils[:-1], jobs, strict=False):
        assert await _report(reports, ATTACKER, sybil, job) == "slashing"
    for job in jobs:
        del node.escrows[job]  # pruned: their slashes will be refused
    node.ledger.state.height += 1
    node.escrows[jobs[-1]] = SimpleNamespace(
        owner=pub(ATTACKER), slashed=set(), is_open=False, prune_height=10**9
    )
    assert await _report(reports, ATTACKER, sybils[-1], jobs[-1]) == "busy"
    node.ledger.state.height += FLIGHT_BLOCKS + 1
    assert await _report(reports, ATTACKER, sybils[-1], jobs[-1]) == "slashing"


async def test_keys_staked_next_to_nothing_take_no_place_in_flight() -> None:
    # Round 9, R9-4: 64 sybil reporters filled all 1,024 places with offenders staked 1
    # micro-credit each, refilled as they landed; a real cheat's report was answered busy.
    node = _Coordinator()
    reports = Reports(node)  # type: ignore[arg-type]
    for i in range(40):
        dust = key(f"dust-{i}")
        node.stakes[pub(dust)] = 1
        job = node.closed(bytes([i]) * 32, ATTACKER)
        assert await _report(reports, ATTACKER, dust, job) == "nothing staked"
    assert node.submitted == []
    node.stakes[pub(CHEAT)] = 1_000_000
    assert await _report(reports, HONEST, CHEAT, node.closed(CHEAT_JOB, HONEST)) == "slashing"


async def test_a_majority_holding_less_than_the_slash_takes_gets_no_slash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Round 27, I1: the ledger takes no more than each witness (a provider of the outvoting
    # majority) holds, and two keys holding the coordinator's floor framed a veteran bonded
    # at exactly the probation stake out of it. The coordinator slashes only on witnesses
    # holding what the slash takes.
    node = _Coordinator()
    reports = Reports(node)  # type: ignore[arg-type]
    node.stakes[pub(CHEAT)] = 1_000_000
    job = node.closed(CHEAT_JOB, ATTACKER)
    monkeypatch.setattr(ledger, "check_slash_evidence", lambda state, slash, **_: 10_000)
    assert await _report(reports, ATTACKER, CHEAT, job) == "nothing staked"
    assert not node.submitted
    monkeypatch.setattr(ledger, "check_slash_evidence", lambda state, slash, **_: 1_000_000)
    assert await _report(reports, ATTACKER, CHEAT, job) == "slashing"
    assert [s.amount for s in node.submitted] == [1_000_000]


async def test_a_slash_above_what_its_witnesses_hold_takes_what_they_hold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Round 28, J2: with slash_amount above the witnesses' stake (and the cheat's stake
    # above theirs) every honest slash was dropped. Past the witness floor, the slash
    # takes what they hold.
    node = _Coordinator()
    node.config.coordinator.slash_amount = 5_000_000
    reports = Reports(node)  # type: ignore[arg-type]
    node.stakes[pub(CHEAT)] = 2_000_000
    job = node.closed(CHEAT_JOB, HONEST)
    seen: list[int] = []

    def bond(state: object, slash: object, *, released_after: int = -1) -> int:
        seen.append(released_after)
        return 1_000_000

    monkeypatch.setattr(ledger, "check_slash_evidence", bond)
    assert await _report(reports, HONEST, CHEAT, job) == "slashing"
    assert [s.amount for s in node.submitted] == [1_000_000]
    # the witnesses reckoned to the slash's landing, as the offender (round 28, J1)
    assert seen and seen[0] > node.ledger.state.height


@pytest.mark.parametrize("run_class", ["torch-2.5.1/cpu/avx2/jit", "ort-1.32.0/cuda/cuda/extended"])
async def test_evidence_of_torchscript_or_gpu_runs_is_never_slashed(run_class: str) -> None:
    # Review round 76, R76-1: a program's runs are not proven to agree; a job drawing one
    # random bit had honest providers outvoted and slashed their whole stake. Round 77,
    # F3: a GPU class holds every GPU model.
    node = _Coordinator()
    reports = Reports(node)  # type: ignore[arg-type]
    node.stakes[pub(CHEAT)] = 1_000_000
    job = node.closed(CHEAT_JOB, HONEST)
    signed = protocol.decode(_result(CHEAT, job), CHAIN, protocol.Result).message
    torch_run = dataclasses.replace(signed, determinism_class=run_class)
    evidence = [protocol.sign(torch_run, CHEAT, CHAIN).raw]
    request = protocol.pack([pub(CHEAT), "failed_verification", evidence])
    [answer] = protocol.unpack(await reports.serve(pub(HONEST), request))
    assert answer == NOT_SLASHABLE and answer in DECIDED
    assert node.submitted == []
