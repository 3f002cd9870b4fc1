"""The ledger's rules: validating transactions and blocks, and applying them.

Rules, in prose (specs/ledger.md is the full text):

- A transaction is a signed :class:`protocol.Transaction` on the genesis chain id. In a
  block at height ``h`` it is valid only if ``h <= expiry_height``, its ``seq`` equals the
  sender's next sequence number (so each ``(sender, seq)`` applies once: a replay is
  refused; a claim may instead be *unsequenced*, ``seq = UNSEQUENCED``, and take no
  number: the escrow takes one claim per provider), its ``fee >= min_fee``, the sender's
  balance covers the fee plus whatever the kind takes from the balance, and the kind's
  own rules hold. A valid transaction charges the fee into the fee pool and advances the
  sender's sequence number (an unsequenced claim's leaves it); an invalid one
  changes nothing, and a block holding one is rejected whole.
- Kinds: ``mint`` (coordinators only; supply stays ≤ 2^62), ``transfer``, ``lock`` (only
  by the requester of the signed JobSpec it carries, whose id is the job id; a job id is
  escrowed at most once, ``h < expiry_height``), ``settle`` (owner only; each payout
  carries the payee's own Bid for the job and pays its price; never pays a provider that
  claimed; before expiry it pays at least the job's redundancy, claims included) and
  ``refund`` (owner only; from ``expiry_height`` on), ``claim`` (the awarded provider with
  the requester's signed Award and Receipt, once, at most the awarded price, revealing
  the unseal key the receipt names, before ``expiry_height``: with a sealed receipt at
  once, with a plain one from ``claim_height``), ``stake``, ``unstake`` (returns after
  ``unbonding_delay`` blocks), ``slash`` (coordinators, with signed Results of one job
  that show the offender contradicting itself or outvoted by a majority the job's escrow
  paid; once per job and offender), ``attest`` (a party of a settled job about another,
  once per pair).
- A block at height ``h`` must extend the current state (``h = height + 1``,
  ``prev_hash = last block hash``), be signed by a genesis coordinator, hold at most
  ``max_block_txs`` transactions, every one valid in order, stay within its byte and
  signature-check budgets (``_budget.py``), and name the state root that results. Before
  its transactions, unbonded stake whose release height is ``<= h`` returns to its owners'
  balances.

Every function here is pure: it reads a state and returns a new one or raises a
:class:`LedgerError`. Nothing does I/O or reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, assert_never

import protocol
from protocol import (
    Award,
    Bid,
    JobSpec,
    ProtocolError,
    Receipt,
)

from . import _state
from ._admission import VerifiedTx, decode_signed
from ._draft import Draft
from ._errors import (
    BadEvidence,
    EscrowError,
    ExpiredTransaction,
    FeeTooLow,
    InsufficientFunds,
    NotAuthorized,
    SequenceError,
)
from ._evidence import check_evidence, witness_bond
from ._genesis import MAX_SUPPLY
from ._payloads import (
    COORDINATOR_KINDS,
    Attest,
    Claim,
    Lock,
    Mint,
    Payload,
    Refund,
    Reserve,
    Settle,
    Slash,
    Stake,
    Transfer,
    Unstake,
)
from ._state import MAX_MINTED, REP_UNIT, SLASH_WEIGHT, Account, Escrow, EscrowStatus

#: Most stake-unbonding entries pending on one account.
MAX_UNBONDING = 64


# --- transaction rules ----------------------------------------------------------------

Commit = Callable[[], None]


def apply_tx(draft: Draft, vtx: VerifiedTx) -> None:
    """Check ``vtx`` against ``draft`` and apply it; on rejection ``draft`` is unchanged."""
    tx = vtx.tx
    h = draft.height
    if tx.expiry_height < h:
        raise ExpiredTransaction(
            f"transaction expired at height {tx.expiry_height}; this block is {h}; "
            "sign it again with a later expiry"
        )
    sender = draft.account(tx.sender)
    unsequenced = vtx.unsequenced
    if tx.seq != sender.next_seq and not unsequenced:
        what = "already used (a replay)" if tx.seq < sender.next_seq else "ahead of the account"
        raise SequenceError(
            f"sequence number {tx.seq} is {what}; the account's next is {sender.next_seq}"
        )
    if tx.fee < draft.genesis.min_fee and not isinstance(vtx.payload, COORDINATOR_KINDS):
        raise FeeTooLow(f"fee {tx.fee} is below the chain's minimum fee {draft.genesis.min_fee}")
    next_seq = sender.next_seq if unsequenced else tx.seq + 1
    if isinstance(vtx.payload, Claim):
        # A claim may pay its fee out of its payout: a provider holding nothing yet (a
        # newcomer) can claim on a chain whose min_fee is above 0.
        commit, payout = _claim_terms(draft, tx.sender, vtx.payload, vtx.embedded_checked)
        if tx.fee > sender.balance + payout:
            raise InsufficientFunds(
                f"balance {sender.balance} and the claim's payout {payout} cannot pay the "
                f"fee {tx.fee}"
            )
        draft.begin_tx()
        draft.put(tx.sender, _with(sender, seq=next_seq))
        commit()
        paid = draft.account(tx.sender)
        draft.put(tx.sender, _with(paid, balance=paid.balance - tx.fee))
        draft.fees += tx.fee
        draft.end_tx()
        return
    if tx.fee > sender.balance:
        raise InsufficientFunds(f"balance {sender.balance} cannot pay the fee {tx.fee}")
    commit = _check(draft, tx.sender, vtx.payload, sender.balance - tx.fee, vtx.embedded_checked)
    draft.begin_tx()
    draft.put(tx.sender, _with(sender, balance=sender.balance - tx.fee, seq=next_seq))
    draft.fees += tx.fee
    commit()
    draft.end_tx()


def _check(
    draft: Draft, sender: bytes, payload: Payload, spendable: int, checked: bool = False
) -> Commit:
    """The kind's own rules: raise if one fails, else return what applies the payload.
    ``spendable`` is the sender's balance after the fee; ``checked``: the signed messages
    the payload carries were verified at admission (:func:`check_embedded`)."""
    match payload:
        case Mint():
            return _check_mint(draft, sender, payload)
        case Transfer():
            return _check_transfer(draft, sender, payload, spendable)
        case Lock():
            return _check_lock(draft, sender, payload, spendable, checked)
        case Settle():
            return _check_settle(draft, sender, payload, checked)
        case Claim():
            return _claim_terms(draft, sender, payload, checked)[0]
        case Refund():
            return _check_refund(draft, sender, payload)
        case Stake():
            return _check_stake(draft, sender, payload, spendable)
        case Unstake():
            return _check_unstake(draft, sender, payload)
        case Slash():
            return _check_slash(draft, sender, payload)
        case Attest():
            return _check_attest(draft, sender, payload)
        case Reserve():
            return _check_reserve(draft, sender, payload, checked)
        case _:
            assert_never(payload)


def _with(
    a: Account,
    *,
    balance: int | None = None,
    seq: int | None = None,
    stake: int | None = None,
    unbonding: tuple[tuple[int, int], ...] | None = None,
) -> Account:
    return Account(
        a.balance if balance is None else balance,
        a.next_seq if seq is None else seq,
        a.stake if stake is None else stake,
        a.unbonding if unbonding is None else unbonding,
        a.rep_s,
        a.rep_f,
        a.rep_epoch,
    )


def _credit(draft: Draft, account: bytes, amount: int) -> None:
    a = draft.account(account)
    draft.put(account, _with(a, balance=a.balance + amount))


def _debit(draft: Draft, account: bytes, amount: int) -> None:
    a = draft.account(account)
    assert a.balance >= amount, "checked before commit"
    draft.put(account, _with(a, balance=a.balance - amount))


def _require_spendable(spendable: int, amount: int, what: str) -> None:
    if amount > spendable:
        raise InsufficientFunds(f"balance after fee is {spendable}, cannot {what} {amount}")


def _require_coordinator(draft: Draft, sender: bytes, what: str) -> None:
    if sender not in draft.genesis.coordinators:
        raise NotAuthorized(f"only a coordinator listed in the genesis may {what}")


def _escrow_of(draft: Draft, job_id: bytes) -> Escrow:
    e = draft.escrow(job_id)
    if e is None:
        raise EscrowError(f"no escrow is locked for job {job_id.hex()}")
    return e


def _require_open(e: Escrow, job_id: bytes) -> None:
    if not e.is_open:
        raise EscrowError(f"escrow of job {job_id.hex()} is already closed")


def _owned_open_escrow(draft: Draft, sender: bytes, job_id: bytes, what: str) -> Escrow:
    """The job's escrow, which ``sender`` must own and which must still be open."""
    e = _escrow_of(draft, job_id)
    if e.owner != sender:
        raise NotAuthorized(f"only the escrow's owner may {what} it")
    _require_open(e, job_id)
    return e


def _paid_with(paid: tuple[tuple[bytes, int], ...], more: dict[bytes, int]) -> dict[bytes, int]:
    out = dict(paid)
    for p, a in more.items():
        out[p] = out.get(p, 0) + a
    return out


def _replace_escrow(e: Escrow, **changes: Any) -> Escrow:
    values = {s: getattr(e, s) for s in Escrow.__slots__}
    values.update(changes)
    return Escrow(**values)


def _check_mint(draft: Draft, sender: bytes, p: Mint) -> Commit:
    _require_coordinator(draft, sender, "mint")
    if draft.minted - draft.burned + p.amount > MAX_SUPPLY:
        raise NotAuthorized(f"minting {p.amount} would exceed the maximum supply {MAX_SUPPLY}")
    if draft.minted + p.amount > MAX_MINTED:
        # ``minted`` counts every mint ever, slashed credits included, and the totals leaf
        # holds it as a u64: past it the state could not be encoded, and making the block
        # raised instead of refusing the mint (review round 70, F3).
        raise NotAuthorized(
            f"minting {p.amount} would take the credits ever minted past {MAX_MINTED} "
            "(the ledger's u64 count of them)"
        )

    def commit() -> None:
        _credit(draft, p.to, p.amount)
        draft.minted += p.amount

    return commit


def _check_transfer(draft: Draft, sender: bytes, p: Transfer, spendable: int) -> Commit:
    _require_spendable(spendable, p.amount, "transfer")

    def commit() -> None:
        _debit(draft, sender, p.amount)
        _credit(draft, p.to, p.amount)

    return commit


def _check_lock(
    draft: Draft, sender: bytes, p: Lock, spendable: int, checked: bool = False
) -> Commit:
    h = draft.height
    try:
        spec_message = decode_signed(p.spec, draft.genesis.chain_id, JobSpec, checked)
    except ProtocolError as exc:
        raise BadEvidence(f"a lock must carry the job's signed JobSpec: {exc}") from None
    if protocol.content_hash(p.spec) != p.job_id:  # the JobSpec's id
        raise BadEvidence("the lock's JobSpec is not the job it locks (its id differs)")
    if spec_message.requester != sender:
        raise NotAuthorized("only the job's requester (the JobSpec's signer) may lock its escrow")
    if draft.escrow(p.job_id) is not None:
        raise EscrowError(f"job {p.job_id.hex()} already has an escrow; a job is locked once")
    if p.expiry_height <= h:
        raise EscrowError(f"escrow expiry height {p.expiry_height} must be above this block {h}")
    # A JobSpec is locked only before its own escrow expiry, and its escrow stays in the
    # state until at least then (it leaves ESCROW_RETENTION blocks after its expiry at the
    # earliest): a job whose escrow is gone can never be locked again, so its used
    # receipts and slash evidence never count twice.
    spec_expiry = spec_message.escrow_expiry_height
    if spec_expiry <= h:
        raise EscrowError(
            f"the JobSpec's escrow expiry height {spec_expiry} has passed (this block is "
            f"{h}); a job is locked before its escrow expiry"
        )
    retention = _state.ESCROW_RETENTION
    if p.expiry_height + retention < spec_expiry:
        raise EscrowError(
            f"escrow expiry height {p.expiry_height} is more than {retention} blocks below "
            f"the JobSpec's {spec_expiry}"
        )
    if not p.claim_height < p.expiry_height:
        raise EscrowError(
            f"claim height {p.claim_height} must be below expiry height {p.expiry_height}"
        )
    if p.max_per_payee > p.amount:
        raise EscrowError(f"max_per_payee {p.max_per_payee} exceeds the locked {p.amount}")
    _require_spendable(spendable, p.amount, "lock")

    def commit() -> None:
        _debit(draft, sender, p.amount)
        draft.escrows[p.job_id] = Escrow(
            owner=sender,
            locked=p.amount,
            remaining=p.amount,
            claim_height=p.claim_height,
            expiry_height=p.expiry_height,
            max_per_payee=p.max_per_payee,
            max_payees=p.max_payees,
            required_payees=min(spec_message.redundancy, p.max_payees),
        )

    return commit


def _check_payouts(e: Escrow, payouts: dict[bytes, int]) -> dict[bytes, int]:
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
    paid = _paid_with(e.paid, payouts)
    # What stays reserved for the providers not paid yet is theirs: no payout to anyone
    # else takes it (a reserved provider hands over its key on the receipt alone).
    held = _held_after(e, paid)
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


def _held_after(e: Escrow, paid: dict[bytes, int]) -> int:
    """What the escrow holds for its reserved providers not in ``paid``."""
    return sum(a for q, a in e.reserved if q not in paid)


def _pay(draft: Draft, payouts: dict[bytes, int]) -> None:
    for provider, amount in sorted(payouts.items()):
        _credit(draft, provider, amount)
        draft.add_reputation(provider, REP_UNIT, 0)


def _check_settle(draft: Draft, sender: bytes, p: Settle, checked: bool = False) -> Commit:
    e = _owned_open_escrow(draft, sender, p.job_id, "settle")
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
    paid = _check_payouts(e, payouts)
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
    held = _held_after(e, paid)
    rest = e.remaining - sum(payouts.values()) - held

    def commit() -> None:
        _pay(draft, payouts)
        _credit(draft, e.owner, rest)
        draft.escrows[p.job_id] = _replace_escrow(
            e,
            remaining=held,
            status=EscrowStatus.SETTLED,
            paid=tuple(sorted(paid.items())),
            closed_height=draft.height,
        )

    return commit


def _claim_terms(
    draft: Draft, sender: bytes, p: Claim, checked: bool = False
) -> tuple[Commit, int]:
    """The claim's rules: raise if one fails, else return what applies it and its payout."""
    h = draft.height
    e = _escrow_of(draft, p.job_id)
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
    paid = _check_payouts(e, payouts)

    def commit() -> None:
        _pay(draft, payouts)
        draft.note(e.owner)
        draft.escrows[p.job_id] = _replace_escrow(
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
    return _claim_terms(Draft(state, height), sender, claim, checked=True)[1]


def _check_reserve(draft: Draft, sender: bytes, p: Reserve, checked: bool = False) -> Commit:
    e = _escrow_of(draft, p.job_id)
    try:
        award = decode_signed(p.award, draft.genesis.chain_id, Award, checked)
    except ProtocolError as exc:
        raise BadEvidence(f"a reserve must carry the requester's signed Award: {exc}") from None
    if award.requester != e.owner or award.job_id != p.job_id:
        raise BadEvidence("a reserve's Award must be the escrow owner's, for this job")
    if award.provider != sender:
        raise BadEvidence("only the provider named in the award may reserve its place")
    _require_open(e, p.job_id)
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
        draft.escrows[p.job_id] = _replace_escrow(
            e, reserved=tuple(sorted((*e.reserved, (sender, award.price))))
        )

    return commit


def _check_refund(draft: Draft, sender: bytes, p: Refund) -> Commit:
    e = _escrow_of(draft, p.job_id)
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
        _credit(draft, e.owner, e.remaining)
        draft.escrows[p.job_id] = _replace_escrow(
            e, remaining=0, status=status, closed_height=draft.height
        )

    return commit


def _check_stake(draft: Draft, sender: bytes, p: Stake, spendable: int) -> Commit:
    _require_spendable(spendable, p.amount, "stake")

    def commit() -> None:
        a = draft.account(sender)
        draft.put(sender, _with(a, balance=a.balance - p.amount, stake=a.stake + p.amount))

    return commit


def _check_unstake(draft: Draft, sender: bytes, p: Unstake) -> Commit:
    a = draft.account(sender)
    if p.amount > a.stake:
        raise InsufficientFunds(f"stake is {a.stake}, cannot unstake {p.amount}")
    if len(a.unbonding) >= MAX_UNBONDING:
        raise EscrowError(
            f"{MAX_UNBONDING} unstakes are already pending; wait for one to be released"
        )
    release = draft.height + draft.genesis.unbonding_delay

    def commit() -> None:
        b = draft.account(sender)
        draft.put(
            sender,
            _with(b, stake=b.stake - p.amount, unbonding=(*b.unbonding, (release, p.amount))),
        )
        draft.new_releases.append((release, sender))

    return commit


def _check_slash(draft: Draft, sender: bytes, p: Slash) -> Commit:
    _require_coordinator(draft, sender, "slash")
    job_id, _, witnesses = check_evidence(draft, p)

    def commit() -> None:
        # Read the offender after the fee: the sender may be slashing itself. A slash
        # takes what is left up to its amount, never more: stake released, or taken by
        # another slash, since the coordinator reckoned it makes it smaller, not refused
        # (review round 9, R9-3: slashes refused for released stake dragged the
        # coordinator's later transactions out of its blocks one a block). Nor more than
        # each witness holds bonded (``witness_bond``: round 26, H1); an unbonded majority's
        # slash takes nothing, counts no failure and leaves the evidence unused (other
        # winners of the job may still witness: round 27, I3).
        a = draft.account(p.offender)
        bond = witness_bond(draft, witnesses)
        if bond == 0:
            return
        amount = min(p.amount, a.stake + a.unbonding_total)
        if bond is not None:
            amount = min(amount, bond)
        take = min(a.stake, amount)
        left = amount - take
        unbonding = list(a.unbonding)
        while left:  # latest unbonding first
            h, amt = unbonding.pop()
            cut = min(amt, left)
            left -= cut
            if amt > cut:
                unbonding.append((h, amt - cut))
        draft.put(p.offender, _with(a, stake=a.stake - take, unbonding=tuple(unbonding)))
        draft.burned += amount
        draft.add_reputation(p.offender, 0, SLASH_WEIGHT * REP_UNIT)
        draft.escrows[job_id] = _used(draft, job_id, p.offender)

    return commit


def _used(draft: Draft, job_id: bytes, offender: bytes) -> Escrow:
    """The job's escrow with its evidence used against ``offender``."""
    e = draft.escrow(job_id)
    assert e is not None
    return _replace_escrow(e, slashed=tuple(sorted((*e.slashed, offender))))


#: A negative attestation about a job whose escrow paid its pair's provider this much or
#: more adds one full failure unit; one about a cheaper job adds the paid fraction of a
#: unit. Every honest price the code draws pays at least this: the daemon's price floor
#: defaults to 1,000 micro-credits, the simulator's providers floor at 800-1,199, and
#: ``scheduler.bid_price`` never bids below the floor. A ledger constant, not a genesis
#: parameter (round-5 review R5-8: four 1-micro-credit jobs took a provider's trust).
ATTEST_FULL_WEIGHT_PAYOUT = 800


def attest_failure_weight(paid: int) -> int:
    """The failure weight a negative attestation adds, for a pair whose provider the
    job's escrow paid ``paid``: ``REP_UNIT * min(1, paid / ATTEST_FULL_WEIGHT_PAYOUT)``,
    rounded down."""
    return REP_UNIT * min(max(0, paid), ATTEST_FULL_WEIGHT_PAYOUT) // ATTEST_FULL_WEIGHT_PAYOUT


def _check_attest(draft: Draft, sender: bytes, p: Attest) -> Commit:
    e = _escrow_of(draft, p.job_id)
    if e.is_open or not e.paid:
        raise EscrowError("attestations are only possible once the job has settled with a payout")
    parties = e.parties()
    if sender not in parties or p.subject not in parties:
        raise NotAuthorized("only a party of the settled job may attest, about another party")
    if p.subject == sender or e.owner not in (sender, p.subject):
        raise NotAuthorized("attestations go between the requester and a provider of the job")
    mark = (sender, p.subject)
    if mark in e.attested:
        raise EscrowError("this party already attested about that party for this job")

    # A rating weighs what the pair risked on each other: what this escrow paid the
    # pair's provider (the subject, or the sender when it rates the requester). Four
    # 1-micro-credit jobs no longer cost a provider four failures (R5-8).
    weight = attest_failure_weight(e.paid_to(sender if p.subject == e.owner else p.subject))

    def commit() -> None:
        draft.escrows[p.job_id] = _replace_escrow(e, attested=tuple(sorted((*e.attested, mark))))
        # A positive attestation is recorded but adds nothing: the job's payout already
        # counted (and two colluding parties would otherwise double their success count).
        if not p.positive:
            draft.add_reputation(p.subject, 0, weight)

    return commit
