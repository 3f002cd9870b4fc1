"""Fees on a chain that asks for one (``min_fee``): every transaction owes it but a genesis
coordinator's mint and slash (it collects no fees and may hold nothing: on a chain with a
minimum fee its faucet could not mint, and a devnet with one never funded its workspace)."""

from __future__ import annotations

import pytest

import ledger
from ledger import tx

from ..keys import pub
from .helpers import ALICE, BOB, CHAIN, COORD, Chain


def test_a_coordinator_mints_at_no_fee_where_everyone_else_pays_the_minimum() -> None:
    c = Chain.new(min_fee=5)
    assert c.state.balance(pub(COORD)) == 0
    c.ok(tx.mint(COORD, CHAIN, 0, to=pub(BOB), amount=7, expiry_height=10))
    assert c.state.balance(pub(BOB)) == 1_000_007
    # the exemption is the coordinator's kinds', not the coordinator's
    c.rejects(
        tx.transfer(COORD, CHAIN, 1, to=pub(BOB), amount=1, expiry_height=10), ledger.FeeTooLow
    )
    c.rejects(
        tx.transfer(ALICE, CHAIN, 0, to=pub(BOB), amount=1, expiry_height=10), ledger.FeeTooLow
    )
    c.ok(tx.transfer(ALICE, CHAIN, 0, to=pub(BOB), amount=1, fee=5, expiry_height=10))
    # and a mint by anyone else is no coordinator's: refused for who sent it
    c.rejects(
        tx.mint(ALICE, CHAIN, 1, to=pub(BOB), amount=7, expiry_height=10), ledger.NotAuthorized
    )
    pool = ledger.Mempool(CHAIN)
    pool.add(tx.mint(COORD, CHAIN, 1, to=pub(ALICE), amount=3, expiry_height=10).raw, c.state)
    with pytest.raises(ledger.FeeTooLow):
        pool.add(tx.transfer(BOB, CHAIN, 0, to=pub(ALICE), amount=1, expiry_height=10).raw, c.state)
