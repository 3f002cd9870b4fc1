"""Round-9 review R9-2: R8-5's mend checked a put-back claim for "escrow closed" and "claim_by
passed" only. A requester whose escrows *expired* under a funded provider's claims (its
sealed receipts sent a block before the expiry), or that *drained* them with claims of its
own keys just before, had the provider's claims refused one a block as before: each put
back passed the check, was signed again and refused, and, sealed, went before the
provider's claim for an honest requester's job, which missed its ``claim_by``. Now a
put-back claim gets the ledger's whole claim check, and sealed claims, new or put back,
go in the order of their ``claim_by``.

The real :class:`TxQueue` against an in-process :class:`ledger.Producer`, as in
``test_review8_drag.py``.
"""

from __future__ import annotations

import nacl.signing
import pytest
import trio
import trio.testing

import ledger
import protocol
from ledger import tx
from node.ledger import TxRequest

from ...keys import key, pub
from ...ledger.helpers import CHAIN, COORD, job_spec
from .drag import blocks_with_an_honest_claim, lock_job, queue_on, sealed_claim

REQUESTER = key("r9-2 requester")  # its escrows expire or are drained under the claims
HONEST = key("r9-2 honest requester")
PROVIDER = key("r9-2 provider")
SYBILS = [key(f"r9-2 sybil {i}") for i in range(8)]
PRICE = 100
K = 8


def _claim(
    requester: nacl.signing.SigningKey,
    job_id: bytes,
    unseal: bytes,
    claim_by: int,
    provider: nacl.signing.SigningKey = PROVIDER,
) -> ledger.Claim:
    return sealed_claim(requester, provider, job_id, unseal, claim_by, PRICE)


def _lock(
    producer: ledger.Producer,
    owner: nacl.signing.SigningKey,
    seq: int,
    spec: protocol.Signed[protocol.JobSpec],
    expiry: int,
) -> None:
    lock_job(producer, owner, seq, spec, expiry=expiry, price=PRICE, payees=2)


@pytest.mark.parametrize("how", ["expire", "drain"])
async def test_claims_the_requester_dooms_do_not_hold_an_honest_sealed_claim_out(
    how: str, autojump_clock: trio.testing.MockClock
) -> None:
    funds = {pub(REQUESTER): 10_000, pub(HONEST): 1_000, pub(PROVIDER): 1_000}
    funds |= {pub(s): 1 for s in SYBILS}
    genesis = ledger.make_genesis(CHAIN, [pub(COORD)], funds)
    producer = ledger.Producer(COORD, ledger.State.from_genesis(genesis), interval_ms=100, now_ms=0)
    # "expire": the escrows expire at the block the provider's claims reach (height 2)
    expiry = 2 if how == "expire" else 100
    specs = [job_spec(REQUESTER, b"r9-2 %d" % i) for i in range(K)]
    for seq, spec in enumerate(specs):
        _lock(producer, REQUESTER, seq, spec, expiry)
    honest = job_spec(HONEST, b"r9-2 honest")
    _lock(producer, HONEST, 0, honest, 100)
    producer.produce()
    claim_by = producer.state.height + 12  # as far as a provider accepts

    queue = queue_on(producer, PROVIDER)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            if how == "drain":  # the requester's own keys take each escrow's whole amount
                for sybil, spec in zip(SYBILS, specs, strict=True):
                    sybil_claim = _claim(REQUESTER, spec.id, b"S" * 32, claim_by, sybil)
                    producer.submit(
                        tx.claim(
                            sybil,
                            CHAIN,
                            0,
                            job_id=spec.id,
                            award=sybil_claim.award,
                            receipt=sybil_claim.receipt,
                            unseal_key=sybil_claim.key,
                            expiry_height=30,
                        ).raw
                    )
            for i, spec in enumerate(specs):  # the requester's sealed receipts, all at once
                queue.put(TxRequest(_claim(REQUESTER, spec.id, bytes([i]) * 32, claim_by)))
            # each admitted, or refused at once (an escrow the chain shows closed)
            while queue.rejected + len(producer.mempool) < K * (2 if how == "drain" else 1):
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
    assert claimed_at is not None and claimed_at <= honest_by  # before: refused, claim_by passed
    assert producer.state.balance(pub(PROVIDER)) == 1_000 + PRICE
    assert queue.rejected == K  # the doomed ones, refused at once
