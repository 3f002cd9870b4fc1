"""The daemon's attestations (specs/daemon.md, "Attestations and slash reports"): they wait
for the job's escrow to close and then go about every provider the escrow paid, by the
settle or by its own claim; a verdict against one it did not pay goes to a coordinator as
a report with that provider's signed Result. Before, only a settle's payees were attested
about, so a provider paid by its claim whose bytes then did not open to its commitment
kept a clean record (issue h23 L2)."""

from __future__ import annotations

from types import SimpleNamespace

import ledger
import scheduler
from node.daemon._attests import AttestStore
from node.daemon._effects import EffectRunner

from ...keys import key, pub
from .test_reports import JOB
from .test_reports import signed_result as _result

OWNER = pub(key("requester"))
LIAR = key("liar")  # paid by its claim, then its bytes did not open to its commitment
WINNER = pub(key("winner"))  # paid by the settle
LOSER = key("loser")  # outvoted, never paid
#: the loser's Result and the paid majority's (what a report must carry)
OUTVOTED = (_result(LOSER), _result(LIAR), _result(key("winner")))


class _Node:
    """What EffectRunner reads of a node for attestations: the ledger's escrow of the job,
    the transactions it submits and the reports it sends."""

    def __init__(self) -> None:
        self.escrow = ledger.Escrow(OWNER, 3_000, 3_000, 10, 20, 1_000, 3)
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


def test_a_provider_paid_by_its_claim_is_attested_against_once_the_escrow_closes() -> None:
    node = _Node()
    runner = EffectRunner(node)  # type: ignore[arg-type]
    corrupt = "delivered output bytes that do not match its commitment"
    runner.execute(
        "requester",
        [
            scheduler.Attest(JOB, pub(LIAR), False, corrupt, ()),
            scheduler.Attest(JOB, pub(LIAR), False, corrupt, ()),  # once per party
            scheduler.Attest(JOB, pub(LOSER), False, "outvoted", OUTVOTED, report=True),
        ],
    )
    assert not any(isinstance(p, ledger.Attest) for p in node.submitted)  # still open

    node.escrow = ledger.Escrow(
        OWNER,
        3_000,
        1_000,
        10,
        20,
        1_000,
        3,
        status=ledger.EscrowStatus.SETTLED,
        paid=tuple(sorted([(pub(LIAR), 1_000), (WINNER, 1_000)])),
        claimed=(pub(LIAR),),
        closed_height=12,
    )
    runner.forget(JOB)

    attests = [p for p in node.submitted if isinstance(p, ledger.Attest)]
    assert attests == [ledger.Attest(JOB, pub(LIAR), 0)]
    assert [who for who, _ in node.reported] == [pub(LOSER)]
    runner.forget(JOB)  # closed again at the next block: nothing twice
    assert len([p for p in node.submitted if isinstance(p, ledger.Attest)]) == 1
