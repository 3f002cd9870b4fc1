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

The payout rules (settle, claim, reserve, refund) are ``_payout_rules.py``; the pieces
both share (a rule's commit, account updates, escrow look-ups) ``_rule_parts.py``.

Every function here is pure: it reads a state and returns a new one or raises a
:class:`LedgerError`. Nothing does I/O or reads a clock.
"""

from __future__ import annotations

from typing import assert_never

import protocol
from protocol import (
    JobSpec,
    ProtocolError,
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
from ._payout_rules import (
    check_refund,
    check_reserve,
    check_settle,
    claim_terms,
)
from ._rule_parts import (
    Commit,
    credit,
    debit,
    escrow_of,
    replace_escrow,
    require_coordinator,
    require_spendable,
    with_,
)
from ._state import MAX_MINTED, REP_UNIT, SLASH_WEIGHT, Escrow

#: Most stake-unbonding entries pending on one account.
MAX_UNBONDING = 64


# --- transaction rules ----------------------------------------------------------------


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
        commit, payout = claim_terms(draft, tx.sender, vtx.payload, vtx.embedded_checked)
        if tx.fee > sender.balance + payout:
            raise InsufficientFunds(
                f"balance {sender.balance} and the claim's payout {payout} cannot pay the "
                f"fee {tx.fee}"
            )
        draft.begin_tx()
        draft.put(tx.sender, with_(sender, seq=next_seq))
        commit()
        paid = draft.account(tx.sender)
        draft.put(tx.sender, with_(paid, balance=paid.balance - tx.fee))
        draft.fees += tx.fee
        draft.end_tx()
        return
    if tx.fee > sender.balance:
        raise InsufficientFunds(f"balance {sender.balance} cannot pay the fee {tx.fee}")
    commit = _check(draft, tx.sender, vtx.payload, sender.balance - tx.fee, vtx.embedded_checked)
    draft.begin_tx()
    draft.put(tx.sender, with_(sender, balance=sender.balance - tx.fee, seq=next_seq))
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
            return check_settle(draft, sender, payload, checked)
        case Claim():
            return claim_terms(draft, sender, payload, checked)[0]
        case Refund():
            return check_refund(draft, sender, payload)
        case Stake():
            return _check_stake(draft, sender, payload, spendable)
        case Unstake():
            return _check_unstake(draft, sender, payload)
        case Slash():
            return _check_slash(draft, sender, payload)
        case Attest():
            return _check_attest(draft, sender, payload)
        case Reserve():
            return check_reserve(draft, sender, payload, checked)
        case _:
            assert_never(payload)


def _check_mint(draft: Draft, sender: bytes, p: Mint) -> Commit:
    require_coordinator(draft, sender, "mint")
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
        credit(draft, p.to, p.amount)
        draft.minted += p.amount

    return commit


def _check_transfer(draft: Draft, sender: bytes, p: Transfer, spendable: int) -> Commit:
    require_spendable(spendable, p.amount, "transfer")

    def commit() -> None:
        debit(draft, sender, p.amount)
        credit(draft, p.to, p.amount)

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
    require_spendable(spendable, p.amount, "lock")

    def commit() -> None:
        debit(draft, sender, p.amount)
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


def _check_stake(draft: Draft, sender: bytes, p: Stake, spendable: int) -> Commit:
    require_spendable(spendable, p.amount, "stake")

    def commit() -> None:
        a = draft.account(sender)
        draft.put(sender, with_(a, balance=a.balance - p.amount, stake=a.stake + p.amount))

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
            with_(b, stake=b.stake - p.amount, unbonding=(*b.unbonding, (release, p.amount))),
        )
        draft.new_releases.append((release, sender))

    return commit


def _check_slash(draft: Draft, sender: bytes, p: Slash) -> Commit:
    require_coordinator(draft, sender, "slash")
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
        draft.put(p.offender, with_(a, stake=a.stake - take, unbonding=tuple(unbonding)))
        draft.burned += amount
        draft.add_reputation(p.offender, 0, SLASH_WEIGHT * REP_UNIT)
        draft.escrows[job_id] = _used(draft, job_id, p.offender)

    return commit


def _used(draft: Draft, job_id: bytes, offender: bytes) -> Escrow:
    """The job's escrow with its evidence used against ``offender``."""
    e = draft.escrow(job_id)
    assert e is not None
    return replace_escrow(e, slashed=tuple(sorted((*e.slashed, offender))))


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
    e = escrow_of(draft, p.job_id)
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
        draft.escrows[p.job_id] = replace_escrow(e, attested=tuple(sorted((*e.attested, mark))))
        # A positive attestation is recorded but adds nothing: the job's payout already
        # counted (and two colluding parties would otherwise double their success count).
        if not p.positive:
            draft.add_reputation(p.subject, 0, weight)

    return commit
