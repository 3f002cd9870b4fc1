"""Round 29, K1 and K2: the requester named a slash's witnesses from its own view, before
the close, and a coordinator slashed on them as named. A helper of the cheat whose
unbonding was released just after the close (K2), or a winner the close never paid (K1),
named first, voided the slash: "nothing staked", a decided answer. The requester now sends
three winners, and the coordinator makes witnesses of the two the escrow paid that hold
the most when the slash lands, by its own reckoning.

A coordinator's ``Reports.serve`` on the real ledger state."""

from __future__ import annotations

from types import SimpleNamespace

import ledger
import protocol
from ledger import tx
from node.daemon.reports import Reports

from ...keys import key, pub
from ...ledger.helpers import ALICE, BOB, CAROL, CHAIN, COORD, JOB, KEYS, Chain, result, settle

DAVE, ERIN = key("dave"), key("erin")
RIGHT, WRONG = b"\x05" * 32, b"\x06" * 32


def _closed_with_a_helper_unbonding() -> Chain:
    """BOB (the cheat) staked 500; CAROL, DAVE and ERIN (its helper) 200 each; ALICE's job
    paid CAROL, DAVE and ERIN; ERIN has since unstaked, released within a few blocks."""
    c = Chain.new()
    c.ok(
        tx.stake(BOB, CHAIN, 0, amount=500, expiry_height=9),
        tx.stake(CAROL, CHAIN, 0, amount=200, expiry_height=9),
        tx.transfer(ALICE, CHAIN, 0, to=pub(DAVE), amount=210, expiry_height=9),
        tx.transfer(ALICE, CHAIN, 1, to=pub(ERIN), amount=210, expiry_height=9),
    )
    c.ok(
        tx.stake(DAVE, CHAIN, 0, amount=200, expiry_height=9),
        tx.stake(ERIN, CHAIN, 0, amount=200, expiry_height=9),
    )
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100, payees=3))
    paid = {pub(CAROL): 100, pub(DAVE): 100, pub(ERIN): 100}
    keys = {**KEYS, pub(ERIN): ERIN}
    c.ok(settle(ALICE, CHAIN, c.seq(ALICE), job_id=JOB, payouts=paid, expiry_height=20, keys=keys))
    c.ok(tx.unstake(ERIN, CHAIN, c.seq(ERIN), amount=200, expiry_height=c.height + 5))
    return c


class _Coordinator:
    def __init__(self, c: Chain) -> None:
        self.ledger = SimpleNamespace(state=c.state)
        self.chain_id = CHAIN
        self.me = pub(key("coordinator"))
        self.roles = ("coordinator",)
        self.config = SimpleNamespace(
            coordinator=SimpleNamespace(slash_amount=100, witness_floor=100)
        )
        self.submitted: list[ledger.Slash] = []
        self.misbehaved: list[str] = []
        self.conduct = SimpleNamespace(misbehaved=lambda peer, why: self.misbehaved.append(why))

    def submit_tx(self, payload: ledger.Slash) -> None:
        self.submitted.append(payload)


async def _serve(c: Chain, witnesses: list[object]) -> tuple[str, _Coordinator]:
    node = _Coordinator(c)
    evidence = [result(BOB, b"bad", commitment=WRONG, replica=0)]
    evidence += [
        result(w, b"good", commitment=RIGHT, replica=i)  # type: ignore[arg-type]
        for i, w in enumerate(witnesses, 1)
    ]
    request = protocol.pack([pub(BOB), "failed_verification", evidence])
    [answer] = protocol.unpack(await Reports(node).serve(pub(ALICE), request))  # type: ignore[arg-type]
    return str(answer), node


async def test_a_helper_unbonding_named_first_does_not_void_the_slash() -> None:
    c = _closed_with_a_helper_unbonding()
    ((release, _),) = c.state.account(pub(ERIN)).unbonding
    assert release <= c.state.height + 4  # gone before the slash can land
    answer, node = await _serve(c, [ERIN, CAROL, DAVE])
    assert answer == "slashing"
    (slash,) = node.submitted
    assert slash.amount == 100
    signers = [protocol.decode(e, CHAIN, protocol.Result).message.provider for e in slash.evidence]
    assert signers == [pub(BOB), pub(CAROL), pub(DAVE)]
    c.ok(
        tx.slash(
            COORD,
            CHAIN,
            c.seq(COORD),
            offender=pub(BOB),
            amount=slash.amount,
            reason="failed_verification",
            evidence=list(slash.evidence),
            expiry_height=c.height + 5,
        )
    )
    assert c.state.account(pub(BOB)).stake == 400


async def test_a_winner_the_escrow_never_paid_is_left_out_of_the_witnesses() -> None:
    c = _closed_with_a_helper_unbonding()
    frank = key("frank")  # agreed with the majority, staked nothing, was never paid
    answer, node = await _serve(c, [frank, CAROL, DAVE])
    assert answer == "slashing" and node.misbehaved == []
    (slash,) = node.submitted
    signers = [protocol.decode(e, CHAIN, protocol.Result).message.provider for e in slash.evidence]
    assert signers == [pub(BOB), pub(CAROL), pub(DAVE)]
