"""The ledger's invariant checks, fed states that break exactly one invariant (found
unpinned by scripts/mutate.py): a replica relies on them to notice a rule that created,
lost or overpaid credits, so each must fire on its own case and stay quiet otherwise."""

from __future__ import annotations

from dataclasses import replace

import pytest

import ledger
from ledger._state import ACCOUNT_PREFIX, ESCROW_PREFIX, GLOBALS_KEY

from ..keys import pub
from .helpers import ALICE, BOB, CAROL, CHAIN, JOB, Chain, settle


def _settled_chain() -> Chain:
    """ALICE's job settled (BOB paid 100): accounts that changed and a closed escrow."""
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100))
    c.ok(settle(ALICE, CHAIN, 1, job_id=JOB, payouts={pub(BOB): 100}, expiry_height=20))
    return c


def _rebuilt(c: Chain, **changed: bytes) -> ledger.State:
    """``c``'s state rebuilt from its leaves with some leaves replaced (key hex -> value)."""
    leaves = dict(c.state.leaves())
    for key_hex, value in changed.items():
        leaves[bytes.fromhex(key_hex)] = value
    return ledger.State.from_leaves(c.state.genesis, c.state.last_block_hash, leaves.items())


def _account_leaf(who: bytes, account: ledger.Account) -> dict[str, bytes]:
    return {(ACCOUNT_PREFIX + who).hex(): account.encode()}


def test_the_state_check_finds_credits_created_from_nothing() -> None:
    c = _settled_chain()
    ledger.check_invariants(_rebuilt(c))  # the leaves as they are pass
    bob = c.state.account(pub(BOB))
    richer = _rebuilt(c, **_account_leaf(pub(BOB), replace(bob, balance=bob.balance + 1)))
    with pytest.raises(ledger.ChainVerificationError, match="minted"):
        ledger.check_invariants(richer)


def test_the_state_check_finds_a_negative_amount_even_when_the_sum_is_right() -> None:
    c = _settled_chain()
    bob, carol = c.state.account(pub(BOB)), c.state.account(pub(CAROL))
    moved = {
        **_account_leaf(pub(BOB), replace(bob, balance=bob.balance + carol.balance + 5)),
        **_account_leaf(pub(CAROL), replace(carol, balance=-5)),
    }
    with pytest.raises(ledger.ChainVerificationError, match="< 0"):
        ledger.check_invariants(_rebuilt(c, **moved))


def test_the_state_check_finds_an_escrow_that_paid_more_than_it_locked() -> None:
    c = _settled_chain()
    e = c.state.escrow(JOB)
    assert e is not None
    overpaid = replace(e, paid=((pub(BOB), e.locked + 1),))  # paid is not held: sum unchanged
    state = _rebuilt(c, **{(ESCROW_PREFIX + JOB).hex(): overpaid.encode()})
    with pytest.raises(ledger.ChainVerificationError, match="paid more"):
        ledger.check_invariants(state)


def test_the_state_check_finds_an_open_escrow_below_zero() -> None:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100))
    e = c.state.escrow(JOB)
    assert e is not None and e.is_open
    alice = c.state.account(pub(ALICE))
    # the escrow holds -10 and ALICE 310 more: the sum is right, nothing paid past the lock
    changed = {
        (ESCROW_PREFIX + JOB).hex(): replace(e, remaining=-10).encode(),
        **_account_leaf(pub(ALICE), replace(alice, balance=alice.balance + 310)),
    }
    state = _rebuilt(c, **changed)
    assert state.conservation()[0] == state.conservation()[1]
    with pytest.raises(ledger.ChainVerificationError, match="paid more"):
        ledger.check_invariants(state)


def _draft(c: Chain) -> ledger.Draft:
    return ledger.Draft(c.state, c.height + 1)


def test_the_block_check_finds_credits_created_from_nothing() -> None:
    c = _settled_chain()
    d = _draft(c)
    assert d.check_invariants() is None
    bob = c.state.account(pub(BOB))
    d.put(pub(BOB), replace(bob, balance=bob.balance + 1))
    assert "not conserved" in (d.check_invariants() or "")


def test_the_block_check_finds_a_negative_amount_even_when_the_sum_is_right() -> None:
    c = _settled_chain()
    d = _draft(c)
    bob, carol = c.state.account(pub(BOB)), c.state.account(pub(CAROL))
    d.put(pub(BOB), replace(bob, stake=bob.stake + carol.balance + 7))
    d.put(pub(CAROL), replace(carol, balance=-7))
    assert "negative" in (d.check_invariants() or "")


def test_the_block_check_finds_an_escrow_that_pays_past_its_lock() -> None:
    c = _settled_chain()
    e = c.state.escrow(JOB)
    assert e is not None
    d = _draft(c)
    d.escrows[JOB] = replace(e, paid=((pub(BOB), e.locked + 1),))
    assert "more than was locked" in (d.check_invariants() or "")
    d = _draft(c)
    alice = c.state.account(pub(ALICE))
    d.escrows[JOB] = replace(e, status=ledger.EscrowStatus.OPEN, remaining=-10, paid=())
    d.put(pub(ALICE), replace(alice, balance=alice.balance + 10))
    assert "more than was locked" in (d.check_invariants() or "")


def test_a_state_leaf_is_read_back_by_its_key() -> None:
    c = _settled_chain()
    for key, value in c.state.leaves():
        assert c.state.leaf(key) == value
    assert c.state.leaf(GLOBALS_KEY) is not None
    assert c.state.leaf(ACCOUNT_PREFIX + b"\x07" * 32) is None
    assert c.state.leaf(ESCROW_PREFIX + b"\x07" * 32) is None
    assert c.state.leaf(ESCROW_PREFIX + pub(BOB)) is None  # an account's key, other prefix
    assert c.state.leaf(ACCOUNT_PREFIX + JOB) is None  # an escrow's key, other prefix


def test_stored_state_without_its_totals_leaf_is_named_corrupt() -> None:
    c = _settled_chain()
    leaves = [(k, v) for k, v in c.state.leaves() if k != GLOBALS_KEY]
    with pytest.raises(ledger.StoreError, match="no totals leaf"):
        ledger.State.from_leaves(c.state.genesis, c.state.last_block_hash, leaves)


def test_a_block_sees_the_escrow_its_earlier_transactions_wrote() -> None:
    # The lock and the settle of one job in one block; then a second settle in one block
    # with a first: the second must see the escrow the first closed, not the block's base.
    c = Chain.new()
    lock = c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100)
    pay = settle(ALICE, CHAIN, 1, job_id=JOB, payouts={pub(BOB): 100}, expiry_height=20)
    c.ok(lock, pay)
    e = c.state.escrow(JOB)
    assert e is not None and e.status == ledger.EscrowStatus.SETTLED
    assert c.state.balance(pub(BOB)) == 1_000_100

    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100))
    first = settle(ALICE, CHAIN, 1, job_id=JOB, payouts={pub(BOB): 100}, expiry_height=20)
    again = settle(ALICE, CHAIN, 2, job_id=JOB, payouts={pub(CAROL): 100}, expiry_height=20)
    produced = c.block(first, again)
    assert [type(exc) for _, exc in produced.rejected] == [ledger.EscrowError]
    assert c.state.balance(pub(CAROL)) == 1_000_000
    assert c.state.balance(pub(ALICE)) == 1_000_000 - 100
