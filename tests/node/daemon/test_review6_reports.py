"""Review round 6, R6-6: slash reports could be shut out. A coordinator held each report
until its job's escrow closed, at most 1,024 at once, and answered ``busy`` past that; the
reporting side sent a report once and dropped it on ``busy``. A requester with 1,024 open
escrows of its own (1 micro-credit each) kept every slot, and an honest requester's report
of an outvoted cheater was never made. Now a coordinator decides a report at once against
its state (an open escrow: ``not closed``, nothing held) and the reporting side sends a
report again, backing off, until a coordinator decides it.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest

import ledger
import protocol
from node.daemon import reports as reports_module
from node.daemon.reports import SEND_ATTEMPTS, Reports
from node.net import NetworkTimeout, RemoteError, RequestRejected

from ...keys import key, pub
from .test_reports import CHAIN, signed_result

ATTACKER = key("attacker")
HONEST = key("honest requester")
CHEATER = key("outvoted cheater")
HONEST_JOB = bytes([7]) * 32


def _result(signer: Any, job: bytes) -> bytes:
    result = signed_result(signer).message
    return protocol.sign(dataclasses.replace(result, job_id=job), signer, CHAIN).raw


class _Coordinator:
    """What Reports reads of a coordinator: the attacker's escrows open, the honest job's
    closed, the cheater staked; what it submits and whom it blames."""

    def __init__(self) -> None:
        def escrow(job_id: bytes) -> SimpleNamespace | None:
            if job_id == HONEST_JOB:
                return SimpleNamespace(
                    owner=pub(HONEST), slashed=frozenset(), is_open=False, prune_height=10**9
                )
            return SimpleNamespace(
                owner=pub(ATTACKER), slashed=frozenset(), is_open=True, prune_height=10**9
            )

        account = SimpleNamespace(stake=5_000, unbonding_total=0, unbonding=())
        state = SimpleNamespace(escrow=escrow, account=lambda who: account, height=10)
        self.ledger = SimpleNamespace(state=state)
        self.chain_id = CHAIN
        self.me = pub(key("coordinator"))
        self.roles = ("coordinator",)
        self.config = SimpleNamespace(
            coordinator=SimpleNamespace(slash_amount=1_000, witness_floor=1_000)
        )
        self.submitted: list[ledger.Slash] = []
        self.blamed: list[str] = []
        self.conduct = SimpleNamespace(misbehaved=lambda peer, why: self.blamed.append(why))
        self.spawned = 0

    def submit_tx(self, payload: ledger.Slash) -> None:
        self.submitted.append(payload)

    def spawn(self, fn: Any, *args: Any) -> None:
        self.spawned += 1


async def _serve(reports: Reports, reporter: Any, offender: Any, job: bytes) -> list[Any]:
    request = protocol.pack([pub(offender), "failed_verification", [_result(offender, job)]])
    return protocol.unpack(await reports.serve(pub(reporter), request))  # type: ignore[no-any-return]


async def test_reports_on_open_escrows_hold_nothing_and_an_honest_report_is_slashed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ledger, "check_slash_evidence", lambda state, slash, **_: None)
    node = _Coordinator()
    reports = Reports(node)  # type: ignore[arg-type]
    for i in range(1_100):  # the attacker's own escrows, its sybils' Results
        job = i.to_bytes(32, "big")
        assert await _serve(reports, ATTACKER, key(f"sybil-{i % 7}"), job) == ["not closed"]
    assert node.spawned == 0 and node.submitted == []
    assert await _serve(reports, HONEST, CHEATER, HONEST_JOB) == ["slashing"]
    [slash] = node.submitted
    assert (slash.offender, slash.amount) == (pub(CHEATER), 1_000)
    assert await _serve(reports, HONEST, CHEATER, HONEST_JOB) == ["slashing"]  # on its way
    assert len(node.submitted) == 1


async def test_a_report_the_ledger_would_refuse_is_refused_and_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(state: object, slash: object, **_: object) -> None:
        raise ledger.EscrowError("the escrow paid the offender")

    monkeypatch.setattr(ledger, "check_slash_evidence", refuse)
    node = _Coordinator()
    reports = Reports(node)  # type: ignore[arg-type]
    with pytest.raises(RequestRejected, match="paid the offender"):
        await _serve(reports, HONEST, CHEATER, HONEST_JOB)
    assert node.submitted == [] and len(node.blamed) == 1


class _Requester:
    """A reporting node whose coordinator answers from a script."""

    def __init__(self, answers: list[Any]) -> None:
        self.roles = ("requester",)
        self.me = pub(HONEST)
        self.genesis = SimpleNamespace(coordinators=[pub(key("coordinator"))])
        self.sent = 0
        self._answers = answers

        async def request(peer: bytes, protocol_id: str, data: bytes, timeout: float) -> bytes:
            self.sent += 1
            answer = self._answers.pop(0) if self._answers else ["not closed"]
            if isinstance(answer, Exception):
                raise answer
            return protocol.pack(answer)

        self.net = SimpleNamespace(request=request)


@pytest.mark.parametrize(
    ("answers", "sends"),
    [
        ([["busy"], ["not closed"], ["slashing"]], 3),
        ([NetworkTimeout("no answer"), ["already reported"]], 2),
        ([RemoteError("bad report")], 1),
        ([], SEND_ATTEMPTS),
    ],
    ids=["busy, then decided", "unreachable, then decided", "refused", "never decided"],
)
async def test_a_report_is_sent_again_until_a_coordinator_decides_it(
    monkeypatch: pytest.MonkeyPatch, answers: list[Any], sends: int
) -> None:
    monkeypatch.setattr(reports_module, "SEND_RETRY_S", (0.0, 0.0))
    node = _Requester(answers)
    reports = Reports(node)  # type: ignore[arg-type]
    await reports._send(pub(CHEATER), [_result(CHEATER, HONEST_JOB)])
    assert node.sent == sends
