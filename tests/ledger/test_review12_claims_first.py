"""Review round 12, R12-1 (and R10-2, R11-1 at their root): a requester settled each escrow,
to a key of its own, in the very block its provider's sealed claim of it landed in, ahead
of it (the settle is smaller, so it ranks first at equal fee). The claim was refused and
every later transaction of the provider's dropped with it, block after block; fresh sybil
requesters, one job each, got past the provider's queue rules. A block maker now applies
the pending claims of an escrow, with their senders' transactions before them, just before
its owner's settle or refund (``Mempool.claims_first``): the claim is paid, the settle
pays what is left, and nothing of the provider's is dropped.

The real :class:`ledger.Producer`.
"""

from __future__ import annotations

import ledger
from ledger import tx

from ..keys import key, pub
from .helpers import CHAIN, COORD, award, job_spec, receipt, settle

REQUESTER = key("r12-1 requester")
OWN = key("r12-1 requester's own key")
PROVIDER = key("r12-1 provider")
PRICE = 100
UNSEAL = bytes([9]) * 32


def test_an_escrow_closed_in_the_block_its_claim_lands_in_pays_the_claim_first() -> None:
    funds = {pub(REQUESTER): 10_000, pub(PROVIDER): 1_000, pub(OWN): 1}
    producer = ledger.Producer(
        COORD,
        ledger.State.from_genesis(ledger.make_genesis(CHAIN, [pub(COORD)], funds)),
        interval_ms=100,
        now_ms=0,
    )
    spec = job_spec(REQUESTER, b"r12-1")
    lock = tx.lock(
        REQUESTER,
        CHAIN,
        0,
        job_id=spec.id,
        amount=PRICE,
        claim_height=80,
        escrow_expiry=100,
        max_per_payee=PRICE,
        max_payees=1,
        spec=spec.raw,
        expiry_height=30,
    )
    producer.submit(lock.raw)
    producer.produce()
    # the requester's settle (to its own key) first in the pool, then the provider's own
    # transfer and its claim behind it
    closing = settle(
        REQUESTER,
        CHAIN,
        1,
        job_id=spec.id,
        payouts={pub(OWN): PRICE},
        expiry_height=30,
        keys={pub(OWN): OWN},
    )
    producer.submit(closing.raw)
    producer.submit(tx.transfer(PROVIDER, CHAIN, 0, to=pub(OWN), amount=5, expiry_height=30).raw)
    claim = tx.claim(
        PROVIDER,
        CHAIN,
        1,
        job_id=spec.id,
        award=award(REQUESTER, PROVIDER, PRICE, job=spec.id),
        receipt=receipt(REQUESTER, PROVIDER, job=spec.id, key=UNSEAL, at_once=True, claim_by=5),
        unseal_key=UNSEAL,
        expiry_height=30,
    )
    producer.submit(claim.raw)
    producer.produce()
    dropped = [d for d in producer.take_dropped() if d.sender == pub(PROVIDER)]
    state = producer.state
    assert dropped == []  # before: the claim refused, nothing of the provider's after it
    assert state.next_seq(pub(PROVIDER)) == 2
    assert state.balance(pub(PROVIDER)) == 1_000 - 5 + PRICE  # the claim paid
    escrow = state.escrow(spec.id)
    assert escrow is not None and pub(PROVIDER) in escrow.claimed
    # the settle came after it: nothing left for the requester's own key
    assert state.balance(pub(OWN)) == 1 + 5
