"""A node's transaction requests (:class:`TxRequest`), a submitted one not yet in a block
(:class:`Pending`), and whether one put back can still apply (:func:`doomed`): what the
transaction queue (:mod:`._txqueue`) keeps and checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import nacl.signing

import ledger
from protocol import Signed, Transaction

from ._intents import sealed_claim_by


@dataclass(frozen=True, slots=True)
class TxRequest:
    """A transaction to make: what it does (``payload``). The queue signs it with the
    node's key, its next sequence number and an expiry height."""

    payload: ledger.Payload
    #: Told why, when the transaction is refused or dropped.
    on_reject: Callable[[str], None] | None = None
    #: The transaction is never valid past this height (a lock: the escrow's own expiry).
    expiry_cap: int | None = None
    #: Told ``(seq, tx_id, expiry_height)`` each time it is signed, before it is submitted.
    on_signed: Callable[[int, bytes, int], None] | None = None

    @property
    def kind(self) -> str:
        return ledger.KIND_OF[type(self.payload)]

    def sign(
        self, key: nacl.signing.SigningKey, chain_id: str, seq: int, expiry: int
    ) -> Signed[Transaction]:
        if self.expiry_cap is not None:
            expiry = min(expiry, self.expiry_cap)
        return ledger.tx.make(key, chain_id, seq, self.payload, expiry_height=expiry)


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
    #: Signed to go last (``TxQueue``'s ``last``): nothing else is signed while it is here.
    last: bool = False


def doomed(payload: ledger.Payload, state: ledger.State, sender: bytes) -> str:
    """Why a claim or slash ``sender`` signed before and had dropped can no longer apply
    (``""`` if it can): a request put back is checked against the chain before it is
    signed again. Otherwise a requester that settled first made a provider's claims
    refused one a block, each dragging the later ones with it, and the provider's claim for
    another requester's job missed its ``claim_by`` behind them (review round 8, R8-5).
    A claim gets the ledger's whole claim check (review round 9, R9-2: escrows that
    expired under the claims, or that the requester's own keys drained, passed a check of
    "open" alone); only "claims open at height ..." is not final."""
    if isinstance(payload, ledger.Slash):
        # a slash whose escrow was pruned (its evidence refused) dragged the coordinator's
        # later ones one a block (review round 9, R9-3); one whose offender's stake was
        # released since takes what is left
        try:
            ledger.check_slash_evidence(state, payload)
        except ledger.LedgerError as exc:
            return f"its evidence no longer holds: {exc}"
        return ""
    if not isinstance(payload, ledger.Claim):
        return ""
    escrow = state.escrow(payload.job_id)
    if escrow is None or not escrow.is_open:
        return "its escrow closed before the claim could land"
    # A plain receipt's claim waits for the window to open: checked as of then.
    at = max(state.height + 1, escrow.claim_height if sealed_claim_by(payload) is None else 0)
    try:
        ledger.check_claim(state, sender, payload, at=at)
    except ledger.LedgerError as exc:
        return str(exc)
    return ""


def place(request: TxRequest, order: int) -> tuple[int, int, int]:
    """Where a request goes among those signed again: sealed claims first, the one whose
    ``claim_by`` comes first before the others (its window is a few blocks; a new one is
    placed among them too), then the rest in the order they were asked for. Otherwise
    put-back claims that could still land went before an honest new one and made it miss
    its ``claim_by`` (review round 9, R9-2)."""
    claim_by = sealed_claim_by(request.payload)
    return (0, claim_by, order) if claim_by is not None else (1, 0, order)
