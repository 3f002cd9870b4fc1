"""A node's transaction requests (:class:`TxRequest`), a submitted one not yet in a block
(:class:`Pending`), and whether one put back can still apply (:func:`doomed`): what the
transaction queue (:mod:`._txqueue`) keeps and checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import nacl.signing

import ledger
from protocol import Signed, Transaction


@dataclass(frozen=True, slots=True)
class TxRequest:
    """A transaction to make: what it does (``payload``). The queue signs it with the
    node's key, its next sequence number and an expiry height."""

    payload: ledger.Payload
    #: Told why, when the transaction is refused or dropped.
    on_reject: Callable[[str], None] | None = None
    #: The transaction is never valid past this height (a lock: the escrow's own expiry).
    expiry_cap: int | None = None
    #: Told ``(seq, tx_id, expiry_height, signed bytes)`` each time it is signed, before it
    #: is submitted.
    on_signed: Callable[[int, bytes, int, bytes], None] | None = None
    #: The least fee it pays (the queue's own is paid if higher).
    fee: int = 0
    #: Told when the queue puts it back to be signed again (dropped behind another, or
    #: above a gap whose numbers are given out again): the number it was signed with is
    #: void, and another transaction may take it first.
    on_put_back: Callable[[], None] | None = None

    @property
    def kind(self) -> str:
        return ledger.KIND_OF[type(self.payload)]

    def sign(
        self, key: nacl.signing.SigningKey, chain_id: str, seq: int, expiry: int, fee: int = 0
    ) -> Signed[Transaction]:
        if self.expiry_cap is not None:
            expiry = min(expiry, self.expiry_cap)
        return ledger.tx.make(key, chain_id, seq, self.payload, expiry_height=expiry, fee=fee)


@dataclass(frozen=True, slots=True)
class Pending:
    """A submitted transaction not yet in a block (``request`` None: a gap filler)."""

    expiry: int
    tx_id: bytes
    request: TxRequest | None
    #: The signed bytes, to send again (empty: reserved after a restart, bytes unknown).
    raw: bytes = b""
    #: When the request was first taken (its place in the order the node asked).
    order: int = 0
    #: A submission went unanswered (or it was reserved): it may yet be admitted, so it
    #: keeps its number even when the numbers around it are given out again.
    unknown: bool = False
    #: The height it was signed at (how long no block has taken it: ``TxQueue``'s probe).
    since: int = 0


def doomed(payload: ledger.Payload, state: ledger.State) -> str:
    """Why a slash signed before and had dropped can no longer apply (``""`` if it can): a
    request put back is checked against the chain before it is signed again. A slash whose
    escrow was pruned (its evidence refused) dragged the coordinator's later transactions
    one a block (review round 9, R9-3); one whose offender's stake was released since takes
    what is left. (Claims, which were checked here too (R8-5, R9-2), take no sequence
    number: none is ever put back.)"""
    if not isinstance(payload, ledger.Slash):
        return ""
    try:
        ledger.check_slash_evidence(state, payload)
    except ledger.LedgerError as exc:
        return f"its evidence no longer holds: {exc}"
    return ""
