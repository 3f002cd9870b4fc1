"""Round 24, R24B-3: a provider's settled jobs, as a requester reads them
(``State.provider_record``), are its success weight decayed to the state's height, as its
score and failures are. The stored weight is decayed only at the account's next
reputation event: read as stored, an idle provider kept its count, and one more payment
(any stranger's settle with one of its Bids) then lowered it, 6 to 1."""

from __future__ import annotations

import dataclasses

import protocol

from ..keys import pub
from .helpers import ALICE, BOB, CHAIN, Chain, job_spec, settle


def _pay_bob(c: Chain, label: bytes) -> None:
    base = job_spec(ALICE, label).message
    spec = protocol.sign(dataclasses.replace(base, escrow_expiry_height=10_000), ALICE, CHAIN)
    c.ok(
        c.lock(
            ALICE,
            1000,
            claim_at=c.height + 5,
            expire_at=10_000,
            per_payee=1000,
            job=spec.id,
            spec=spec.raw,
        )
    )
    payouts = {pub(BOB): 1000}
    c.ok(
        settle(
            ALICE, CHAIN, c.seq(ALICE), job_id=spec.id, payouts=payouts, expiry_height=c.height + 5
        )
    )


def test_settled_jobs_decay_while_idle_and_a_payment_never_lowers_them() -> None:
    c = Chain.new(reputation_half_life=10)
    for i in range(8):
        _pay_bob(c, b"r24-job-%d" % i)
    paid = c.state.provider_record(pub(BOB)).settled_jobs
    assert paid >= 6
    c.until(c.height + 60)  # six half-lives idle
    idle = c.state.provider_record(pub(BOB))
    successes, _ = c.state.reputation_weights(pub(BOB))
    assert idle.settled_jobs == successes // 65536 < paid  # decayed, as the score is
    _pay_bob(c, b"r24-one-more")
    after = c.state.provider_record(pub(BOB)).settled_jobs
    assert after == idle.settled_jobs + 1  # one more job, never fewer
