"""Round-8 review R8-5: a requester that settles first makes a funded provider's claims of
its jobs refused in a block, and each refused claim drops the provider's later ones behind
it. The queue signed the dropped claims again, before any other request, though their
escrows had closed: refused one a block, they held the provider's sealed claim for another
requester's job past its ``claim_by``. Now a request put back is checked against the chain
before it is signed again (a claim of a closed escrow is refused at once), and a new sealed
claim goes before the others put back.

The real :class:`TxQueue` against an in-process :class:`ledger.Producer`, as in
``test_review6_gaps.py``.
"""

from __future__ import annotations

import nacl.signing
import trio
import trio.testing

import ledger
from ledger import tx
from node.ledger import TxRequest

from ...keys import key, pub
from ...ledger.helpers import CHAIN, COORD, job_spec, settle
from .drag import blocks_with_an_honest_claim, queue_on, sealed_claim

SETTLER = key("r8-5 requester")  # settles its jobs first, paying a bidder of its own
HONEST = key("r8-5 honest requester")
PROVIDER = key("r8-5 provider")
BIDDER = key("r8-5 bidder")
PRICE = 100
K = 6


def _claim(
    requester: nacl.signing.SigningKey, job_id: bytes, unseal: bytes, claim_by: int
) -> ledger.Claim:
    return sealed_claim(requester, PROVIDER, job_id, unseal, claim_by, PRICE)


async def test_claims_of_escrows_settled_first_do_not_hold_an_honest_sealed_claim_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    funds = {pub(SETTLER): 10_000, pub(HONEST): 1_000, pub(PROVIDER): 1_000}
    genesis = ledger.make_genesis(CHAIN, [pub(COORD)], funds)
    producer = ledger.Producer(COORD, ledger.State.from_genesis(genesis), interval_ms=100, now_ms=0)
    specs = [job_spec(SETTLER, b"r8-5 %d" % i) for i in range(K)]
    honest = job_spec(HONEST, b"r8-5 honest")
    for seq, spec in enumerate(specs):
        producer.submit(
            tx.lock(
                SETTLER,
                CHAIN,
                seq,
                job_id=spec.id,
                amount=PRICE,
                claim_height=80,
                escrow_expiry=100,
                max_per_payee=PRICE,
                max_payees=1,
                spec=spec.raw,
                expiry_height=30,
            ).raw
        )
    producer.submit(
        tx.lock(
            HONEST,
            CHAIN,
            0,
            job_id=honest.id,
            amount=PRICE,
            claim_height=80,
            escrow_expiry=100,
            max_per_payee=PRICE,
            max_payees=1,
            spec=honest.raw,
            expiry_height=30,
        ).raw
    )
    producer.produce()
    claim_by = producer.state.height + 4

    queue = queue_on(producer, PROVIDER)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            # the settler's settles land first, a block before its sealed receipts reach
            # the provider
            for seq, spec in enumerate(specs, start=K):
                paid = settle(
                    SETTLER,
                    CHAIN,
                    seq,
                    job_id=spec.id,
                    payouts={pub(BIDDER): PRICE},
                    expiry_height=producer.state.height + 40,
                    keys={pub(BIDDER): BIDDER},
                )
                producer.submit(paid.raw)
            producer.produce()
            for i, spec in enumerate(specs):  # its sealed receipts, all at once
                queue.put(TxRequest(_claim(SETTLER, spec.id, bytes([i]) * 32, claim_by)))
            while queue.rejected + len(producer.mempool) < K:  # refused at admission
                await trio.sleep(0.01)
            claimed_at, honest_by, refused = await blocks_with_an_honest_claim(
                producer,
                queue,
                pub(PROVIDER),
                honest.id,
                lambda by: _claim(HONEST, honest.id, b"H" * 32, by),
            )
            nursery.cancel_scope.cancel()
    assert refused == []
    assert claimed_at is not None and claimed_at <= honest_by
    assert producer.state.balance(pub(PROVIDER)) == 1_000 + PRICE


def test_a_slash_whose_evidence_no_longer_holds_is_not_signed_again() -> None:
    # Round 9, R9-3: a put-back slash is checked against the chain first, as a claim is
    # (its escrow pruned: its evidence refused).
    from node.ledger._txrequest import doomed

    state = ledger.State.from_genesis(ledger.make_genesis(CHAIN, [pub(COORD)], {}))
    slash = ledger.Slash(pub(key("released")), 1_000, "failed_verification", (b"x",))
    assert "evidence no longer holds" in doomed(slash, state)
    assert doomed(ledger.Transfer(pub(BIDDER), 1), state) == ""
