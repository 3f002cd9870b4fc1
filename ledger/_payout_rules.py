"""The rules that pay out of an escrow, or hold or return what it holds: ``settle``,
``claim``, ``reserve`` and ``refund``, with the payout limits they share (specs/ledger.md).
Pure: each reads a draft and returns what applies it, or raises a :class:`LedgerError`."""

from __future__ import annotations

import protocol
from protocol import Award, Bid, ProtocolError, Receipt

from . import _state
from ._admission import decode_signed
from ._draft import Draft
from ._errors import BadEvidence, EscrowError, InsufficientFunds, NotAuthorized
from ._payloads import Claim, Refund, Reserve, Settle
from ._rule_parts import (
    Commit,
    credit,
    escrow_of,
    owned_open_escrow,
    paid_with,
    replace_escrow,
    require_open,
)
from ._state import REP_UNIT, Escrow, EscrowStatus


def check_payouts(e: Escrow, payouts: dict[bytes, int]) -> dict[bytes, int]:
    """Check payouts against the escrow's limits; returns the new paid-per-provider map."""
    if e.owner in payouts:
        raise NotAuthorized("an escrow cannot pay its own owner; settle refunds the rest")
    for q, amount in payouts.items():
        price = e.reserved_for(q)
        if price and amount != price:
            raise EscrowError(
                f"provider {q.hex()} has a place reserved at {price}; it is paid that, not {amount}"
            )
    total = sum(payouts.values())
    if total > e.remaining:
        raise InsufficientFunds(f"payouts of {total} exceed the {e.remaining} left in escrow")
    paid = paid_with(e.paid, payouts)
    # What stays reserved for the providers not paid yet is theirs: no payout to anyone
    # else takes it (a reserved provider hands over its key on the receipt alone).
    held = held_after(e, paid)
    if total + held > e.remaining:
        raise InsufficientFunds(
            f"payouts of {total} would take some of the {held} reserved in the escrow for "
            "other providers"
        )
    over = [p for p in payouts if paid[p] > e.max_per_payee]
    if over:
        raise EscrowError(
            f"provider {over[0].hex()} would get {paid[over[0]]}, above the escrow's "
            f"per-payee limit {e.max_per_payee}"
        )
    places = set(paid) | {q for q, _ in e.reserved}
    if len(places) > e.max_payees:
        raise EscrowError(
            f"escrow pays at most {e.max_payees} providers, not {len(places)} (those paid "
            "and those with a place reserved)"
        )
    return paid


def held_after(e: Escrow, paid: dict[bytes, int]) -> int:
    """What the escrow holds for its reserved providers not in ``paid``."""
    return sum(a for q, a in e.reserved if q not in paid)


def pay(draft: Draft, payouts: dict[bytes, int]) -> None:
    for provider, amount in sorted(payouts.items()):
        credit(draft, provider, amount)
        draft.add_reputation(provider, REP_UNIT, 0)


def check_settle(draft: Draft, sender: bytes, p: Settle, checked: bool = False) -> Commit:
    e = owned_open_escrow(draft, sender, p.job_id, "settle")
    listed = {x.provider: x.amount for x in p.payouts}
    if len(listed) != len(p.payouts):
        raise EscrowError("settle lists a provider twice; merge its payouts")
    # A provider that claimed was paid its award price: a settle (from a requester whose
    # view of the chain lags) never pays it again; that payout stays in the escrow's rest.
    payouts = {q: a for q, a in listed.items() if q not in e.claimed}
    # Fair exchange: before expiry (while an awarded provider's claim is possible) the owner
    # cannot close the escrow paying fewer providers than the job's redundancy; with fewer
    # results it waits for expiry and refunds, and each provider holding a receipt claims.
    covered = len(set(listed) | set(e.claimed))
    if draft.height < e.expiry_height and covered < e.required_payees:
        raise EscrowError(
            f"a settle before the escrow's expiry (height {e.expiry_height}) must pay at "
            f"least the job's {e.required_payees} replicas, not {covered}; refund at expiry"
        )
    paid = check_payouts(e, payouts)
    # The payouts' Bids last: the state's cheap refusals come before up to 64 signature
    # checks (none if they were verified at admission; round 5, R5-6).
    for x in p.payouts:
        try:
            bid = decode_signed(x.bid, draft.genesis.chain_id, Bid, checked)
        except ProtocolError as exc:
            raise BadEvidence(f"a payout must carry the provider's signed Bid: {exc}") from None
        if bid.job_id != p.job_id or bid.provider != x.provider:
            raise BadEvidence("a payout's Bid must be the paid provider's, for this job")
        if x.amount != bid.price:
            raise BadEvidence(f"a payout pays its Bid's price {bid.price}, not {x.amount}")
    # A reserved provider the settle does not pay keeps its price in the escrow, claimable
    # with its receipt until the expiry (then the owner's refund takes it back).
    held = held_after(e, paid)
    rest = e.remaining - sum(payouts.values()) - held

    def commit() -> None:
        pay(draft, payouts)
        credit(draft, e.owner, rest)
        draft.escrows[p.job_id] = replace_escrow(
            e,
            remaining=held,
            status=EscrowStatus.SETTLED,
            paid=tuple(sorted(paid.items())),
            closed_height=draft.height,
        )

    return commit


def claim_terms(draft: Draft, sender: bytes, p: Claim, checked: bool = False) -> tuple[Commit, int]:
    """The claim's rules: raise if one fails, else return what applies it and its payout."""
    h = draft.height
    e = escrow_of(draft, p.job_id)
    chain = draft.genesis.chain_id
    try:
        award = decode_signed(p.award, chain, Award, checked)
        receipt = decode_signed(p.receipt, chain, Receipt, checked)
    except ProtocolError as exc:
        raise BadEvidence(
            f"claim evidence is not a valid signed Award and Receipt: {exc}"
        ) from None
    if award.requester != e.owner or receipt.requester != e.owner:
        raise BadEvidence("the award and receipt must be signed by the escrow's owner")
    if award.job_id != p.job_id or receipt.job_id != p.job_id:
        raise BadEvidence("the award and receipt must be for the claimed job")
    if award.provider != sender or receipt.provider != sender:
        raise BadEvidence("only the provider named in the award and receipt may claim")
    if award.replica != receipt.replica:
        raise BadEvidence("the receipt is for another replica than the award")
    if protocol.key_hash(p.key) != receipt.key_hash:
        # Every claim publishes the key that opens the sealed output the owner holds (it
        # reads it from the escrow): nobody is paid for an output it keeps closed.
        raise BadEvidence("a claim must reveal the key its receipt names")
    if not e.claimable_by(sender):
        # Closed, and holding no price reserved for this provider that it was not paid.
        raise EscrowError(f"escrow of job {p.job_id.hex()} is already closed")
    if not receipt.sealed and h < e.claim_height:
        raise EscrowError(f"claims open at height {e.claim_height}; this block is {h}")
    if receipt.sealed and h > receipt.claim_by:
        # Its owner waits for the key that long and then runs the job elsewhere: a claim
        # held back past it would be paid for an output the owner no longer reads.
        raise EscrowError(
            f"the sealed receipt is claimable up to height {receipt.claim_by} (its claim_by); "
            f"this block is {h}"
        )
    if h >= e.expiry_height:
        raise EscrowError(f"escrow expired at height {e.expiry_height}; claims are closed")
    if sender in e.claimed or e.paid_to(sender):
        raise EscrowError("this provider already claimed from this escrow, or was paid")
    # A provider with a place reserved is paid the reserved price (its own Bid's), which
    # its award names in an honest exchange: the place and the price are what it relied on.
    price = e.reserved_for(sender) or award.price
    payouts = {sender: price}
    paid = check_payouts(e, payouts)

    def commit() -> None:
        pay(draft, payouts)
        draft.note(e.owner)
        draft.escrows[p.job_id] = replace_escrow(
            e,
            remaining=e.remaining - price,
            paid=tuple(sorted(paid.items())),
            claimed=tuple(sorted((*e.claimed, sender))),
            unsealed=tuple(sorted((*e.unsealed, (sender, p.key)))),
        )

    return commit, price


def check_claim(state: _state.State, sender: bytes, claim: Claim, *, at: int | None = None) -> int:
    """Raise a :class:`LedgerError` if ``sender``'s ``claim`` would be refused by a block at
    height ``at`` (default: the next) on ``state`` (its own rules; the fee and sequence
    number are the caller's); else return its payout. The
    signed messages it carries are not checked again: the caller made it from ones it
    verified. A provider checks a claim it signed before and had dropped before it signs
    it again (review round 9, R9-2)."""
    height = state.height + 1 if at is None else at
    return claim_terms(Draft(state, height), sender, claim, checked=True)[1]


def check_reserve(draft: Draft, sender: bytes, p: Reserve, checked: bool = False) -> Commit:
    e = escrow_of(draft, p.job_id)
    try:
        award = decode_signed(p.award, draft.genesis.chain_id, Award, checked)
    except ProtocolError as exc:
        raise BadEvidence(f"a reserve must carry the requester's signed Award: {exc}") from None
    if award.requester != e.owner or award.job_id != p.job_id:
        raise BadEvidence("a reserve's Award must be the escrow owner's, for this job")
    if award.provider != sender:
        raise BadEvidence("only the provider named in the award may reserve its place")
    require_open(e, p.job_id)
    if draft.height >= e.expiry_height:
        raise EscrowError(
            f"escrow expired at height {e.expiry_height}; no place can be reserved in it"
        )
    if award.price > e.max_per_payee:
        raise EscrowError(
            f"the award's price {award.price} is above the escrow's per-payee limit "
            f"{e.max_per_payee}"
        )
    if e.reserved_for(sender) or e.paid_to(sender):
        raise EscrowError("this provider already has a place in this escrow (reserved or paid)")
    places = {q for q, _ in e.paid} | {q for q, _ in e.reserved}
    if len(places) >= e.max_payees:
        raise EscrowError(
            f"escrow pays at most {e.max_payees} providers; {len(places)} are paid or reserved"
        )
    if e.held + award.price > e.remaining:
        raise InsufficientFunds(
            f"the escrow's {e.remaining} cannot hold {award.price} more beside the {e.held} "
            "reserved already"
        )

    def commit() -> None:
        draft.escrows[p.job_id] = replace_escrow(
            e, reserved=tuple(sorted((*e.reserved, (sender, award.price))))
        )

    return commit


def check_refund(draft: Draft, sender: bytes, p: Refund) -> Commit:
    e = escrow_of(draft, p.job_id)
    if e.owner != sender:
        raise NotAuthorized("only the escrow's owner may refund it")
    if not e.is_open and e.remaining == 0:
        raise EscrowError(f"escrow of job {p.job_id.hex()} is already closed")
    if draft.height < e.expiry_height:
        raise EscrowError(
            f"escrow expires at height {e.expiry_height}; refund is possible from then on "
            f"(this block is {draft.height})"
        )

    # A settled escrow still holding reserved prices nobody claimed gives them back and
    # stays settled (it paid its providers).
    status = EscrowStatus.REFUNDED if e.is_open else e.status

    def commit() -> None:
        credit(draft, e.owner, e.remaining)
        draft.escrows[p.job_id] = replace_escrow(
            e, remaining=0, status=status, closed_height=draft.height
        )

    return commit
