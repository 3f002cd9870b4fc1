"""Block validity: a block is applied whole or rejected whole."""

from __future__ import annotations

import dataclasses

import nacl.signing
import pytest

import ledger

from ..keys import key, pub
from .helpers import ALICE, BOB, CHAIN, COORD, Chain, signed_block


def sign_block(
    c: Chain,
    txs: list[bytes],
    *,
    signer: nacl.signing.SigningKey = COORD,
    height: int | None = None,
    prev_hash: bytes | None = None,
    state_root: bytes = bytes(32),
) -> bytes:
    """The next block of ``c``, or one that differs from it where a test says."""
    return signed_block(
        c.height + 1 if height is None else height,
        c.state.last_block_hash if prev_hash is None else prev_hash,
        state_root=state_root,
        txs=txs,
        signer=signer,
    )


def corrupt_signature(raw: bytes) -> bytes:
    return raw[:-1] + bytes([raw[-1] ^ 1])


def test_block_with_one_bad_signature_is_rejected_whole() -> None:
    c = Chain.new()
    txs = [c.transfer(ALICE, BOB, 5)]
    txs.append(ledger.tx.transfer(ALICE, CHAIN, 1, to=pub(BOB), amount=5, expiry_height=9))
    produced = ledger.produce_block(c.state, COORD, [ledger.verify_tx(t.raw, CHAIN) for t in txs])
    good = produced.block.message
    one_corrupted = [good.txs[0], corrupt_signature(good.txs[1])]
    raw = sign_block(c, one_corrupted, state_root=good.state_root)
    before = c.state
    with pytest.raises(ledger.BlockRejected) as info:
        ledger.apply_block(c.state, raw)
    assert info.value.index == 1
    assert isinstance(info.value.cause, ledger.MalformedTransaction)
    assert c.state is before and c.state.balance(pub(ALICE)) == 1_000_000
    assert ledger.apply_block(c.state, produced.block.raw).root == produced.state.root


@pytest.mark.parametrize(
    "fault",
    ["forged", "not_coordinator", "height", "prev_hash", "root", "too_many", "garbage"],
)
def test_block_header_faults(fault: str) -> None:
    c = Chain.new(max_block_txs=1)
    c.ok()
    ok = ledger.produce_block(c.state, COORD, [])
    root = ok.block.message.state_root
    mallory = key("mallory")
    raw = {
        "forged": corrupt_signature(ok.block.raw),
        "not_coordinator": sign_block(c, [], signer=mallory, state_root=root),
        "height": sign_block(c, [], height=c.height + 2, state_root=root),
        "prev_hash": sign_block(c, [], prev_hash=b"\x01" * 32, state_root=root),
        "root": sign_block(c, [], state_root=b"\x01" * 32),
        "too_many": sign_block(c, [b"", b""], state_root=root),
        "garbage": b"\x95\x01",
    }[fault]
    with pytest.raises(ledger.BlockRejected):
        ledger.apply_block(c.state, raw)
    assert ledger.apply_block(c.state, ok.block.raw).height == 2


def test_replayed_transaction_in_a_block_is_rejected() -> None:
    c = Chain.new()
    t = c.transfer(ALICE, BOB, 5)
    c.ok(t)
    raw = sign_block(c, [t.raw])
    with pytest.raises(ledger.BlockRejected) as info:
        ledger.apply_block(c.state, raw)
    assert isinstance(info.value.cause, ledger.SequenceError)


def test_same_transaction_twice_in_one_block_is_rejected() -> None:
    c = Chain.new()
    t = c.transfer(ALICE, BOB, 5)
    raw = sign_block(c, [t.raw, t.raw])
    with pytest.raises(ledger.BlockRejected) as info:
        ledger.apply_block(c.state, raw)
    assert info.value.index == 1


def test_incremental_root_equals_reference() -> None:
    c = Chain.new()
    for i in range(5):
        c.ok(c.transfer(ALICE, key(f"user{i}"), 10 + i))
        assert ledger.compute_root(c.state.leaves()) == c.state.root
    assert ledger.replay(c.state.genesis, c.blocks).root == c.state.root


def test_a_block_whose_effect_breaks_an_invariant_is_rejected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A rule that went wrong (here: a transfer that also credits its sender) must not slip
    # through: every block's changes are checked against the invariants when applied.
    from ledger import _apply

    c = Chain.new()
    txs = [c.transfer(ALICE, BOB, 5)]
    produced = ledger.produce_block(c.state, COORD, [ledger.verify_tx(t.raw, CHAIN) for t in txs])
    honest_apply = ledger.apply_tx

    def creating_credit(draft: ledger.Draft, vtx: ledger.VerifiedTx) -> None:
        honest_apply(draft, vtx)
        sender = draft.account(pub(ALICE))
        draft.accounts[pub(ALICE)] = dataclasses.replace(sender, balance=sender.balance + 5)

    monkeypatch.setattr(_apply, "apply_tx", creating_credit)
    with pytest.raises(ledger.BlockRejected, match="credits not conserved"):
        ledger.apply_block(c.state, produced.block)


def test_a_negative_balance_breaks_an_invariant() -> None:
    c = Chain.new()
    draft = ledger.Draft(c.state, c.height + 1)
    assert draft.check_invariants() is None
    account = draft.account(pub(ALICE))
    draft.accounts[pub(ALICE)] = dataclasses.replace(account, balance=-1)
    assert draft.check_invariants() == f"account {pub(ALICE).hex()} would go negative"
