"""``slash_outvoted = False`` is honoured by the daemon (round-3 review F6): an outvoted
loser is never paid, so its attestation never lands; ``EffectRunner.forget`` turns it into
a slash report to a coordinator only when the requester asked for a slash (a known answer
contradicted, or ``slash_outvoted``), never for every outvoted provider."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import ledger
import scheduler
from node.daemon._attests import AttestStore
from node.daemon._effects import EffectRunner
from scheduler._requester_settle import punish
from scheduler._verification import Verdict, VerdictStatus

from ...keys import key, pub
from .test_reports import JOB, signed_result

OWNER = key("requester")
W1, W2, LOSER = key("winner-1"), key("winner-2"), key("loser")


class _Node:
    """What EffectRunner reads of a node for attestations: the job's escrow (closed,
    the two winners paid), the transactions it submits and the reports it sends."""

    def __init__(self) -> None:
        self.escrow = ledger.Escrow(
            pub(OWNER),
            3_000,
            1_000,
            10,
            20,
            1_000,
            3,
            status=ledger.EscrowStatus.SETTLED,
            paid=tuple(sorted([(pub(W1), 1_000), (pub(W2), 1_000)])),
            closed_height=12,
        )
        self.ledger = SimpleNamespace(
            state=SimpleNamespace(
                escrow=lambda job_id: self.escrow if job_id == JOB else None, height=15
            )
        )
        self.requester = None  # no machine: what it knows of receipts is not known here
        self.submitted: list[ledger.Payload] = []
        self.reported: list[tuple[bytes, list[bytes]]] = []
        self.reports = SimpleNamespace(report=lambda who, ev: self.reported.append((who, ev)))
        self.recovery = SimpleNamespace(attests=AttestStore(None))  # kept in memory

    def submit_tx(self, payload: ledger.Payload) -> None:
        self.submitted.append(payload)


def _reported_after_close(*, slash_outvoted: bool, known: bool) -> list[bytes]:
    """The real ``punish`` of a loser outvoted by two paid winners, its effects carried
    out by the daemon's EffectRunner; returns who was reported once the escrow closed
    (the reports ``forget`` sends, not the ``Slash`` effect's own)."""
    cfg = scheduler.RequesterConfig(
        key=OWNER, chain_id="aimx-test", commitment=lambda b: b"", slash_outvoted=slash_outvoted
    )
    winners: list[Any] = [
        SimpleNamespace(result=signed_result(w), provider=pub(w)) for w in (W1, W2)
    ]
    loser: Any = SimpleNamespace(result=signed_result(LOSER), provider=pub(LOSER))
    ref: Any = SimpleNamespace(commitment=bytes(32))
    answer = SimpleNamespace(commitment=bytes(32), determinism_class="ort-1.32.0/cpu/avx2/extended")
    job: Any = SimpleNamespace(
        id=JOB, known=answer if known else None, spec=SimpleNamespace(runtime="onnx")
    )
    effects = punish(
        job, Verdict(VerdictStatus.VERIFIED, (0, 1), (2,), ref), [loser], winners, cfg, {}, 0
    )
    node = _Node()
    runner = EffectRunner(node)  # type: ignore[arg-type]
    runner.execute("requester", [e for e in effects if isinstance(e, scheduler.Attest)])
    runner.forget(JOB)
    assert not any(isinstance(p, ledger.Attest) for p in node.submitted)  # never paid
    return [who for who, _ in node.reported]


def test_an_outvoted_loser_is_not_reported_while_slash_outvoted_is_off() -> None:
    assert _reported_after_close(slash_outvoted=False, known=False) == []


def test_an_outvoted_loser_is_reported_with_slash_outvoted_on() -> None:
    assert _reported_after_close(slash_outvoted=True, known=False) == [pub(LOSER)]


def test_a_loser_contradicting_a_known_answer_is_reported() -> None:
    assert _reported_after_close(slash_outvoted=False, known=True) == [pub(LOSER)]


def test_a_negative_attestation_without_the_report_flag_sends_nothing() -> None:
    node = _Node()
    runner = EffectRunner(node)  # type: ignore[arg-type]
    evidence = (signed_result(LOSER), signed_result(W1), signed_result(W2))
    runner.execute("requester", [scheduler.Attest(JOB, pub(LOSER), False, "outvoted", evidence)])
    runner.forget(JOB)
    assert node.reported == []


def test_a_report_carries_only_the_paid_winners_results() -> None:
    # Round 11, R11-3: a winner that delivered but never claimed (a late finalise: no
    # settle) stayed in the evidence; the ledger takes none naming an unpaid majority
    # provider, so the coordinator refused the honest report and counted it against us.
    unpaid = key("winner-3, never paid")
    evidence = tuple(signed_result(k) for k in (LOSER, W1, W2, unpaid))
    node = _Node()
    runner = EffectRunner(node)  # type: ignore[arg-type]
    attest = scheduler.Attest(JOB, pub(LOSER), False, "outvoted", evidence, report=True)
    runner.execute("requester", [attest])
    runner.forget(JOB)
    [(who, sent)] = node.reported
    assert who == pub(LOSER) and sent == [e.raw for e in evidence[:3]]
    # with fewer than two paid winners left, there is nothing a slash could carry
    node = _Node()
    node.escrow = replace(node.escrow, paid=((pub(W1), 1_000),))
    runner = EffectRunner(node)  # type: ignore[arg-type]
    runner.execute("requester", [attest])
    runner.forget(JOB)
    assert node.reported == []
