"""Review round 16, R16B-2: a requester locked one price for a redundancy-3 job; each
provider found the escrow covering its own award (its price against what was left), all
three ran, and the first winner's claim took everything: the other two claims were refused
for funds. A provider now works only for an escrow that holds every payee it may pay at its
most, so no claim with a receipt is refused for funds while a payee place is left."""

from __future__ import annotations

import dataclasses

import ledger
import protocol
from ledger import tx
from scheduler._ledger import uncovered

from ..ledger.helpers import ALICE, CHAIN, Chain, job_spec

PRICE = 1000


def _escrow(
    c: Chain, amount: int, payees: int, label: bytes
) -> tuple[ledger.Escrow, protocol.JobSpec]:
    spec = dataclasses.replace(
        job_spec(ALICE, label).message, max_price=PRICE, redundancy=3, deadline_ms=10**7
    )
    signed = protocol.sign(spec, ALICE, CHAIN)
    c.ok(
        tx.lock(
            ALICE,
            CHAIN,
            c.seq(ALICE),
            job_id=signed.id,
            amount=amount,
            claim_height=90,
            escrow_expiry=100,
            max_per_payee=PRICE,
            max_payees=payees,
            spec=signed.raw,
            expiry_height=c.height + 10,
        )
    )
    escrow = c.state.escrow(signed.id)
    assert escrow is not None
    return escrow, spec


def test_an_escrow_that_cannot_pay_every_payee_at_its_most_is_refused() -> None:
    c = Chain.new()
    short, spec = _escrow(c, PRICE, 3, b"one price for three")  # the attack
    why = uncovered(short, spec, PRICE, 10)
    assert why == f"holds {PRICE}, less than its 3 payees at {PRICE} each"
    enough, spec = _escrow(c, 3 * PRICE, 3, b"three prices")  # an honest lock
    assert uncovered(enough, spec, PRICE, 10) == ""


def test_an_escrow_paying_fewer_providers_than_the_redundancy_is_refused() -> None:
    # (mutation run: the payee-count check went unnoticed once the funds check came)
    c = Chain.new()
    few, spec = _escrow(c, 3 * PRICE, 2, b"two places for three")
    assert uncovered(few, spec, PRICE, 10) == "pays at most 2 providers, under the job's redundancy"
