"""Claims publish keys (the sealed fair exchange, issue 14): every claim reveals the key
that opens the output bytes its requester holds; the key must be the one the receipt names,
and the escrow keeps it for its owner to read. A sealed receipt (a verified winner's) is
claimable at once (up to the height it names), a plain one only from the claim window."""

from __future__ import annotations

from nacl.signing import SigningKey

import ledger
from ledger import tx
from protocol import Signed, Transaction

from ..keys import pub
from .helpers import ALICE, BOB, CAROL, CHAIN, JOB, Chain, award, receipt, settle

KEY = bytes(range(32))


def _claim(
    c: Chain,
    provider: SigningKey,
    *,
    sealed_for: bytes = b"",
    plain_for: bytes = b"",
    reveal: bytes = b"",
    claim_by: int = 1_000,
) -> Signed[Transaction]:
    key = sealed_for or plain_for
    return tx.claim(
        provider,
        CHAIN,
        c.seq(provider),
        job_id=JOB,
        award=award(ALICE, provider, 100),
        receipt=receipt(ALICE, provider, key=key, at_once=bool(sealed_for), claim_by=claim_by),
        expiry_height=20,
        unseal_key=reveal,
    )


def test_a_sealed_receipt_is_claimed_at_once_and_its_key_kept_for_the_owner() -> None:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=8, expire_at=9, per_payee=100))
    c.ok(_claim(c, BOB, sealed_for=KEY, reveal=KEY))  # height 1, long before the window
    e = c.state.escrow(JOB)
    assert e is not None and e.is_open
    assert e.unsealed_by(pub(BOB)) == KEY and e.unsealed_by(pub(CAROL)) == b""
    assert c.state.balance(pub(BOB)) == 1_000_100 and e.remaining == 200
    # The owner's settle after it read the key pays the others, never BOB again.
    c.ok(settle(ALICE, CHAIN, 1, job_id=JOB, payouts={pub(BOB): 100}, expiry_height=20))
    assert c.state.balance(pub(BOB)) == 1_000_100


def test_a_sealed_receipt_claims_nothing_without_the_key_it_names() -> None:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=8, expire_at=12, per_payee=100))
    wrong = (b"", bytes(32), KEY[:31], bytes(reversed(KEY)))
    for reveal in wrong:
        c.rejects(_claim(c, BOB, sealed_for=KEY, reveal=reveal), ledger.BadEvidence)
    e = c.state.escrow(JOB)
    assert e is not None and e.remaining == 300 and e.unsealed == ()
    # Once the claim window opens, a sealed receipt still needs its key.
    c.until(8)
    c.rejects(_claim(c, BOB, sealed_for=KEY), ledger.BadEvidence)
    c.ok(_claim(c, BOB, sealed_for=KEY, reveal=KEY))


def test_a_plain_receipt_waits_for_the_claim_window_and_reveals_its_key_too() -> None:
    """Review of the sealed exchange: a plain receipt's claim revealed nothing, so a
    provider that withheld its key after the receipt was still paid in the claim window."""
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100))
    c.rejects(_claim(c, BOB, plain_for=KEY, reveal=KEY), ledger.EscrowError)  # height 1 < 5
    c.until(5)
    c.rejects(_claim(c, BOB, plain_for=KEY), ledger.BadEvidence)  # withheld: no pay
    c.ok(_claim(c, BOB, plain_for=KEY, reveal=KEY))
    e = c.state.escrow(JOB)
    assert e is not None and e.unsealed_by(pub(BOB)) == KEY and e.paid_to(pub(BOB)) == 100


def test_a_settle_before_the_sealed_claim_lands_closes_the_escrow_to_it() -> None:
    """The owner's own settle may come first (paying other bidders, even its own keys):
    the claim is then refused, so the key is never published and the sealed bytes the
    owner holds stay unread. Nobody gains: the provider was not paid, the owner got no
    output."""
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=8, expire_at=9, per_payee=100))
    c.ok(settle(ALICE, CHAIN, 1, job_id=JOB, payouts={pub(CAROL): 100}, expiry_height=20))
    c.rejects(_claim(c, BOB, sealed_for=KEY, reveal=KEY), ledger.EscrowError)
    e = c.state.escrow(JOB)
    assert e is not None and not e.is_open and e.unsealed == ()  # the key never published


def test_a_sealed_receipt_is_claimable_only_up_to_its_claim_by_height() -> None:
    """Review round 2 (D1): a verified winner held its sealed receipt back until the
    requester had failed it as withholding its key (and awarded the job again), then
    claimed, and was paid for an output the requester no longer read. A sealed receipt now
    names the last height its claim may land at, which is when the requester stops waiting
    for the key."""
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=18, expire_at=30, per_payee=100))
    c.ok(_claim(c, BOB, sealed_for=KEY, reveal=KEY, claim_by=2))  # block 2: the last one
    late = _claim(c, CAROL, sealed_for=KEY, reveal=KEY, claim_by=2)  # block 3
    assert "claim_by" in c.rejects(late, ledger.EscrowError)
    e = c.state.escrow(JOB)
    assert e is not None and e.paid_to(pub(CAROL)) == 0 and e.unsealed_by(pub(CAROL)) == b""
    # Nor in the claim window: the late claim is refused for good.
    c.until(18)
    c.rejects(_claim(c, CAROL, sealed_for=KEY, reveal=KEY, claim_by=2), ledger.EscrowError)
    assert c.state.balance(pub(BOB)) == 1_000_100 and c.state.balance(pub(CAROL)) == 1_000_000
