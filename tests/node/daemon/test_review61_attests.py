"""Review round 61, R61-4: a requester's attestations (and the slash evidence they carry)
waited for their escrow in memory only, so a restart forgot them: the providers it paid
got no attestation for the job, and a provider it outvoted was never reported. They are
kept on disk now and go once the escrow closes, whoever holds the job then."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import ledger
import protocol
import scheduler
from node.daemon._effects import EffectRunner
from node.daemon._recovery import Recovery

from ...keys import pub
from ...ledger.helpers import ALICE, BOB, CAROL, CHAIN, JOB, result


class _Chain:
    height = 100

    def __init__(self) -> None:
        self.open = True

    def escrows(self) -> list[Any]:
        return []

    def escrow(self, job_id: bytes) -> Any:
        if job_id != JOB:
            return None
        if self.open:
            return ledger.Escrow(pub(ALICE), 200, 200, 150, 300, 100, 2)
        status, paid = ledger.EscrowStatus.SETTLED, ((pub(BOB), 100),)
        return ledger.Escrow(pub(ALICE), 200, 0, 150, 300, 100, 2, status=status, paid=paid)


def _requester_node(tmp_path: Path, chain: _Chain, sent: list[Any], reported: list[Any]) -> Any:
    """A requester's node as far as its effects and kept attestations see it (restarted:
    its machine holds no job)."""
    node = SimpleNamespace(
        me=pub(ALICE),
        chain_id=CHAIN,
        provider=None,
        requester=SimpleNamespace(jobs={}),
        jobs={},
        ledger=SimpleNamespace(state=chain),
        submit_tx=lambda payload, **kw: sent.append(payload),
        reports=SimpleNamespace(report=lambda who, evidence: reported.append(who)),
    )
    node.effects = EffectRunner(node)
    node.recovery = Recovery(node, tmp_path)
    node.recovery.intents.load = lambda: None  # no money intents in this test
    return node


def test_attestations_outlive_a_restart_and_go_once_the_escrow_closes(tmp_path: Path) -> None:
    chain = _Chain()
    sent: list[Any] = []
    reported: list[Any] = []
    first = _requester_node(tmp_path, chain, sent, reported)
    first.recovery.load()
    good = protocol.decode(result(BOB, b"right"), CHAIN, protocol.Result)
    bad = protocol.decode(result(CAROL, b"wrong"), CHAIN, protocol.Result)
    first.effects.execute(
        "requester",
        [
            scheduler.Attest(JOB, pub(BOB), True, "verified", (good,)),
            scheduler.Attest(JOB, pub(CAROL), False, "outvoted", (bad, good), report=True),
        ],
    )
    first.recovery.attests.close()
    # the daemon is killed; it starts again with an empty machine
    node = _requester_node(tmp_path, chain, sent, reported)
    node.recovery.load()
    node.recovery.on_block(chain, 0)
    assert sent == []  # the escrow is open: a claim may still pay
    chain.open = False  # settled, paying BOB
    node.recovery.on_block(chain, 0)
    # the tree before: nothing, the attestations gone with the old process
    assert sent == [ledger.Attest(JOB, pub(BOB), 1)]
    assert reported == []  # one paid agreeing Result is too little evidence for a slash
    node.recovery.on_block(chain, 0)
    assert len(sent) == 1  # once
    node.recovery.attests.close()
    again = _requester_node(tmp_path, chain, sent, reported)
    again.recovery.load()
    again.recovery.on_block(chain, 0)
    assert len(sent) == 1  # dropped from the disk once sent
