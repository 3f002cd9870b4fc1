"""The mempool: validated pending transactions, ordered by fee for the next block.

Every transaction is verified once, on entry (signature, chain, payload). A transaction is
refused if it is a duplicate, the same signed bytes as one refused when a block was made
(remembered until its expiry, the last ``MAX_REFUSED_REMEMBERED``; checked before the
signature), a replay (its seq is below the sender's next), expired, below
the minimum fee, more than ``max_ahead`` ahead of the sender's sequence (which also bounds
the transactions one account has pending), valid for more than ``max_expiry_ahead`` blocks,
too large for a block alone (``_budget.py``), or if the pool is full of higher fees. Only
a *funded* sender is admitted: a genesis coordinator, or an account whose balance pays
the fees of all its pending transactions with this one and which holds something (balance
or stake); an unfunded account only with a claim whose Award and Receipt the escrow's owner
signed for it and which the next block's claim rule would take (one such claim per sender
and escrow pending, at most the escrow's ``max_payees`` per escrow). So keys that never
received credits cannot fill the pool, nor keep a provider's claim out with junk claims of
their own, and an account cannot pledge more fees than it holds.

Unsequenced claims (``UNSEQUENCED``: a claim that takes no sequence number) are kept apart
(:class:`~ledger._pool_claims.ClaimPool`): one per sender and escrow (a strictly higher fee
replaces it, within ``MAX_REPLACEMENTS``), ``max_ahead`` per sender, the escrow's
``max_payees`` per escrow, each admitted only if the next block's claim rule would take it;
a candidate of its own in the block's round robin, dropped or evicted alone.

No gaps: a sender's pending sequence numbers always run without a hole from its next on
the chain. A transaction is admitted only at the sender's next sequence number, one past
its highest pending, or at a pending one (a second transaction with the same
``(sender, seq)`` replaces the first only with a strictly higher fee, at most
``MAX_REPLACEMENTS`` times while that sequence number is pending, and at most
``MAX_REPLACEMENTS`` replacements of one sender's between two blocks); a later one is
refused (:class:`SequenceGap`: the sender submits it again once the ones before it are
in). A transaction that leaves the pool without entering a block (dropped when the block
is made, expired) takes its sender's later ones with it (:data:`DROPPED_BEHIND`), and a
full pool evicts only the last pending transaction of a sender. So everything pending can
be selected in turn: nothing waits behind a hole until its expiry, holding a place it never
pays for.

Block selection (``_pool_order.py``) takes the highest fee density first (the fee per
share of the block's budgets a transaction takes: ``_budget.fee_density``) among each
sender's next transaction (so a sender's transactions stay in sequence order). At equal
density it goes round robin: a candidate ranks by how many of its sender's transactions
the block would then hold, itself included (every sender's first before any sender's
second), then by the bytes its sender would then have taken of the block, then by
arrival. So a few accounts' maximal transactions at fee 0 cannot hold the block space for
blocks on end, as arrival order let them, and a sender's first transaction (a claim)
waits only for the other senders' first ones that are smaller or as small and came
earlier, or denser. (Ranking by bytes alone, round 5, let each account put ``claim bytes
/ transfer bytes`` = 4 transfers ahead of a claim: 512 accounts did it; ranking by fee
per transaction, round 70, let 31 settles of 65 checks a fee above the claim's fill a
block's checks ahead of it.) Candidates that no longer fit the block are passed over or
set aside unseen, and never end the block while one that fits is pending (within half the
bytes left).

The pool is bounded in count (``max_size``) and in bytes (``max_bytes``). When full, a new
transaction evicts the last pending one of a sender with a lower fee; at equal fee, the
last one of the sender holding the most bytes in the pool, if that is more than the new
transaction's sender would hold with it. So at fee 0 one account's share never keeps
another account out. The eviction candidates are kept in heaps with lazy deletion, so a
submission refused by a full pool costs its signature check and a few heap look-ups.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import protocol
from protocol import Receipt, Result

from . import _pool_order, _pool_room
from ._admission import (
    VerifiedMessages,
    VerifiedTx,
    check_embedded,
    check_settle_escrow,
    decode_checked,
    verify_tx,
)
from ._block import MAX_TX_BYTES
from ._budget import BlockBudget, fits_a_block
from ._errors import ExpiredTransaction, FeeTooLow, MempoolRejected, SequenceError, SequenceGap
from ._payloads import COORDINATOR_KINDS, Claim, Lock, Settle, Slash
from ._payout_rules import check_claim
from ._pool_claims import ClaimPool, check_unfunded_claim
from ._pool_claims import PoolEntry as _Entry
from ._state import State

#: Most transactions of one account pending (its sequence numbers next .. next + this - 1).
MAX_AHEAD = 64
#: Most blocks ahead of the chain's height a pending transaction may stay valid.
MAX_EXPIRY_AHEAD = 1_000
#: Most transactions pending in all.
MAX_POOL_TXS = 20_000
#: Most bytes of transactions pending in all: 20,000 of the largest (``MAX_TX_BYTES``)
#: would be 1.6 GB; honest transactions are about 0.3-12 KB.
MAX_POOL_BYTES = 64 * 1024 * 1024
#: How the reason of a transaction dropped with an earlier one of its sender begins (the
#: wire carries only the text): it did nothing wrong, and may be signed again.
DROPPED_BEHIND = "dropped behind sequence number"
#: Most ids of transactions refused when a block was made that are remembered (each until
#: its expiry height), so that the same signed bytes are not admitted again.
MAX_REFUSED_REMEMBERED = 65_536
#: How the refusal of such a transaction, submitted again, begins.
REFUSED_AT_BLOCK = "this transaction was refused when a block was made"
#: Most times a pending ``(sender, seq)`` is replaced (by a higher fee) while it stays
#: pending, and most replacements of one sender's between two blocks (whatever their
#: sequence numbers). Each replacement is a new payload whose carried messages are checked
#: at admission (a settle's 64 Bids, recombined from more than the mempool remembers: 65
#: checks), and it pays no fee if the block then refuses it: unbounded, one funded key
#: cost the coordinator 400 settles' checks a block (round 7, R7-3). The second bound
#: keeps a sender from spreading them over its 64 pending sequence numbers.
MAX_REPLACEMENTS = 4


@dataclass(slots=True)
class Mempool:
    """Pending transactions for one chain. Pure: the caller passes the current state."""

    chain_id: str
    max_size: int = MAX_POOL_TXS
    max_bytes: int = MAX_POOL_BYTES
    max_ahead: int = MAX_AHEAD
    max_expiry_ahead: int = MAX_EXPIRY_AHEAD
    max_replacements: int = MAX_REPLACEMENTS
    #: Replacements admitted since the block at ``_replaced_height``, by sender.
    _replacements: dict[bytes, int] = field(default_factory=dict)
    _replaced_height: int = -1
    #: Each sender's pending transactions by sequence number (a run with no hole).
    _by_sender: dict[bytes, dict[int, _Entry]] = field(default_factory=dict)
    _ids: set[bytes] = field(default_factory=set)
    #: Pending claims from unfunded senders, by job id: each sender's transaction id.
    _unfunded_claims: dict[bytes, dict[bytes, bytes]] = field(default_factory=dict)
    #: Pending slashes by ``(job id, offender)``: their transaction ids (round 11, R11-8).
    _slashes: dict[tuple[bytes, bytes], bytes] = field(default_factory=dict)
    #: Pending unsequenced claims (``UNSEQUENCED``).
    _claims: ClaimPool = field(default_factory=ClaimPool)
    #: Eviction candidates: ``(fee, -arrival, sender, seq, tx_id)`` of each sender's last
    #: pending transaction; an item no longer pending or no longer last is stale, skipped
    #: when met (whatever becomes a sender's last is pushed again then).
    _tails: list[tuple[int, int, bytes, int, bytes]] = field(default_factory=list)
    #: Bytes pending, in all and by sender.
    _bytes: int = 0
    _sender_bytes: dict[bytes, int] = field(default_factory=dict)
    #: ``(-bytes, sender)`` each time a sender's pending bytes change; an item whose bytes
    #: are no longer the sender's is stale, skipped when met.
    _hogs: list[tuple[int, bytes]] = field(default_factory=list)
    _arrivals: int = 0
    #: Transactions evicted for a higher fee since the caller last took them (its senders
    #: should hear of it: :meth:`take_evicted`).
    _evicted: list[VerifiedTx] = field(default_factory=list)
    #: Ids of transactions refused when a block was made, oldest first, with their expiry
    #: heights (:meth:`refused_at_block`).
    _refused: dict[bytes, tuple[int, str]] = field(default_factory=dict)
    max_refused: int = MAX_REFUSED_REMEMBERED
    #: The signed messages (Bids, Awards, ...) verified at admission, across transactions
    #: (:func:`~ledger._admission.check_embedded`).
    messages: VerifiedMessages = field(default_factory=VerifiedMessages)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, tx_id: bytes) -> bool:
        return tx_id in self._ids

    def add(self, raw: bytes, state: State) -> VerifiedTx:
        """Verify and admit ``raw``; raises a :class:`TransactionRejected` if refused. The
        same bytes pending, or refused when a block was made, are refused before their
        signature is checked: a node sends what it has pending again (a coordinator that
        reconnected, its probe of transactions no block took), and at a signature check
        each such resend cost the coordinator work nobody paid for (round 15, R15-6)."""
        if len(raw) <= MAX_TX_BYTES:
            tx_id = protocol.content_hash(raw)
            if tx_id in self._ids:
                raise MempoolRejected("transaction is already in the mempool")
            self._check_not_refused(tx_id, state)
        return self.add_verified(verify_tx(raw, self.chain_id), state)

    def add_verified(self, vtx: VerifiedTx, state: State) -> VerifiedTx:
        """Admit ``vtx`` (its own signature checked); returns it as admitted, the signed
        messages it carries checked too (after every cheaper refusal)."""
        tx = vtx.tx
        if vtx.id in self._ids:
            raise MempoolRejected("transaction is already in the mempool")
        self._check_not_refused(vtx.id, state)
        if vtx.unsequenced:
            return self._add_claim(vtx, state)
        next_seq = state.next_seq(tx.sender)
        if tx.seq < next_seq:
            raise SequenceError(
                f"sequence number {tx.seq} was already used (a replay); next is {next_seq}"
            )
        if tx.seq >= next_seq + self.max_ahead:
            raise MempoolRejected(
                f"sequence number {tx.seq} is more than {self.max_ahead} ahead of {next_seq}"
            )
        self._check_terms(vtx, state)
        queue = self._by_sender.get(tx.sender, {})
        old = queue.get(tx.seq)
        if old is not None and tx.fee <= old.vtx.tx.fee:
            raise MempoolRejected(
                f"a transaction with sequence number {tx.seq} is already pending; "
                "replace it only with a higher fee"
            )
        if old is not None:
            self._check_replacement(old, state)
        claim_job = self._admit_sender(vtx, state, queue, old)
        if old is None:
            following = next_seq  # the sequence number after the sender's pending run
            while following in queue:
                following += 1
            if tx.seq != following:  # after the other checks: only this one is worth a retry
                raise SequenceGap(
                    f"sequence number {tx.seq} {SequenceGap.TEXT}: the sender's next is "
                    f"{following}; submit that one first"
                )
        if isinstance(vtx.payload, Settle):
            job = vtx.payload.job_id
            lock_pending = any(
                isinstance(q.vtx.payload, Lock) and q.vtx.payload.job_id == job
                for q in queue.values()
            )
            check_settle_escrow(vtx.payload, tx.sender, state, lock_pending=lock_pending)
        if old is not None:  # counted from here, admitted or not: its messages cost next
            self._count_replacement(old)
        # Last, as the dearest: up to 64 signature checks (a settle's Bids), each once. A
        # bad one is refused here as malformed, never left to a block (round 5, R5-6).
        # Every refusal above (the fee bump, the replacements' bounds, the settle's escrow)
        # costs no carried signature (round 7, R7-3).
        vtx = check_embedded(vtx, self.chain_id, self.messages)
        slashed = self._slash_key(vtx)
        if slashed is not None:
            pending = self._slashes.get(slashed)
            if pending is not None and (old is None or old.vtx.id != pending):
                # One report sent to two coordinators: the second slash would be refused
                # in the block ("evidence used once") and drop its sender's later
                # transactions behind it (round 11, R11-8).
                raise MempoolRejected(
                    "a slash of this provider for this job is already pending; "
                    "its evidence is used once"
                )
        self._make_room(vtx, old)
        if old is not None:
            self._forget(old.vtx)
        self._arrivals += 1
        entry = _Entry(vtx, self._arrivals, old.replaced if old is not None else 0)
        queue = self._by_sender.setdefault(tx.sender, queue)
        queue[tx.seq] = entry
        self._ids.add(vtx.id)
        self._count_bytes(tx.sender, len(vtx.raw))
        if tx.seq + 1 not in queue:
            self._push_tail(entry)
        if claim_job is not None:
            self._unfunded_claims.setdefault(claim_job, {})[tx.sender] = vtx.id
        if slashed is not None:
            self._slashes[slashed] = vtx.id
        return vtx

    def _slash_key(self, vtx: VerifiedTx) -> tuple[bytes, bytes] | None:
        """A slash's ``(job id, offender)`` (its evidence already verified), else None."""
        p = vtx.payload
        if not isinstance(p, Slash):
            return None
        first = decode_checked(p.evidence[0], self.chain_id, Result)
        return first.job_id, p.offender

    def _check_terms(self, vtx: VerifiedTx, state: State) -> None:
        """Refuse ``vtx`` for its expiry, its fee or its size."""
        tx = vtx.tx
        if tx.expiry_height <= state.height:
            raise ExpiredTransaction(
                f"transaction expired at height {tx.expiry_height}; the chain is at {state.height}"
            )
        if tx.expiry_height > state.height + self.max_expiry_ahead:
            raise MempoolRejected(
                f"transaction is valid until height {tx.expiry_height}, more than "
                f"{self.max_expiry_ahead} blocks ahead of the chain's {state.height}"
            )
        if tx.fee < state.genesis.min_fee and not isinstance(vtx.payload, COORDINATOR_KINDS):
            raise FeeTooLow(f"fee {tx.fee} is below the minimum fee {state.genesis.min_fee}")
        if not fits_a_block(vtx.raw, vtx.payload, self.chain_id):
            # (the payload limits keep every transaction far below both budgets today)
            raise MempoolRejected(
                "the transaction is over a block's byte or signature-check budget alone: "
                "it could never be in a block; split it"
            )

    def _add_claim(self, vtx: VerifiedTx, state: State) -> VerifiedTx:
        """Admit an unsequenced claim: one per sender and escrow pending (a higher fee
        replaces it, within ``MAX_REPLACEMENTS``), at most ``max_ahead`` per sender and
        the escrow's ``max_payees`` per escrow, each one the next block's claim rule would
        take. It holds no sequence number, so it is selected, dropped or evicted alone."""
        tx, p = vtx.tx, vtx.payload
        assert isinstance(p, Claim)
        self._check_terms(vtx, state)
        mine = self._claims.of(tx.sender)
        old = mine.get(p.job_id)
        if old is not None and tx.fee <= old.vtx.tx.fee:
            raise MempoolRejected(
                "a claim of this sender for this job is already pending; replace it only "
                "with a higher fee"
            )
        if old is not None:
            self._check_replacement(old, state)
        elif len(mine) >= self.max_ahead:
            raise MempoolRejected(
                f"the sender already has {self.max_ahead} claims pending; submit more once "
                "some are in a block"
            )
        e = state.escrow(p.job_id)
        # A claimant whose price the escrow holds reserved passes the escrow's caps below:
        # the ledger pays it whatever else is pending, and the owner's own keys' claims
        # filling the caps kept it out a block of its window (review round 82, F1). One a
        # sender and escrow, and reserved places are at most max_payees: still bounded.
        reserved = e is not None and e.reserved_for(tx.sender) > 0 and not e.paid_to(tx.sender)
        full = e is not None and self._claims.at(p.job_id) >= e.max_payees
        if old is None and full and not reserved:
            raise MempoolRejected("this escrow already has as many claims pending as payees")
        # Its Award and Receipt are decoded here without their signatures (only refusals
        # follow from them), then verified below, after every cheaper refusal.
        payout = check_claim(state, tx.sender, p)
        assert e is not None  # (check_claim refuses a claim of no escrow)
        paying = self._claims.paying(p.job_id) - (old.payout if old is not None else 0)
        if paying + payout > e.remaining and not reserved:
            # Each would pay its fee out of a payout the escrow cannot make for all of them:
            # 64 claims on 32 locked credits held the pool and paid nothing (round 15, R15-4).
            raise MempoolRejected(
                f"the claims pending on this escrow would take {paying} of the {e.remaining} "
                f"it holds: it cannot pay this one's {payout} as well"
            )
        self._check_funds(vtx, state, old, payout)
        if old is not None:  # counted from here, admitted or not: its messages cost next
            self._count_replacement(old)
        vtx = check_embedded(vtx, self.chain_id, self.messages)
        self._make_room(vtx, old, e.owner)
        if old is not None:
            self._drop_claim(old.vtx)
        self._arrivals += 1
        until = e.expiry_height - 1
        receipt = self.messages.decode(p.receipt, self.chain_id, Receipt)
        if receipt.sealed:
            until = min(until, receipt.claim_by)
        replaced = old.replaced if old is not None else 0
        entry = _Entry(vtx, self._arrivals, replaced, until, payout, e.owner)
        self._claims.add(entry)
        self._ids.add(vtx.id)
        self._count_bytes(entry.bucket, len(vtx.raw))
        self._push_tail(entry)
        return vtx

    def _drop_claim(self, vtx: VerifiedTx) -> None:
        """Take the unsequenced claim ``vtx`` out of the pool, if it is in."""
        entry = self._claims.remove(vtx)
        if entry is not None:
            self._forget(vtx, entry.bucket)

    def _count_replacement(self, old: _Entry) -> None:
        old.replaced += 1
        sender = old.vtx.sender
        self._replacements[sender] = self._replacements.get(sender, 0) + 1

    def _check_replacement(self, old: _Entry, state: State) -> None:
        """Refuse a replacement of ``old`` past either bound of ``MAX_REPLACEMENTS`` (its
        ``(sender, seq)`` while pending; its sender's since the last block). Before any
        signed message the replacement carries is checked (round 7, R7-3)."""
        if state.height != self._replaced_height:  # a block since: a new count
            self._replacements.clear()
            self._replaced_height = state.height
        tx = old.vtx.tx
        if old.replaced >= self.max_replacements:
            raise MempoolRejected(
                f"the transaction with sequence number {tx.seq} was already replaced "
                f"{old.replaced} times while pending (at most {self.max_replacements}); "
                "wait until it is in a block or dropped, then sign a new one"
            )
        if self._replacements.get(tx.sender, 0) >= self.max_replacements:
            raise MempoolRejected(
                f"the sender already replaced {self.max_replacements} pending transactions "
                f"since block {state.height} (at most {self.max_replacements} a block); "
                "replace more after the next block"
            )

    # making room: evictions and the shares' bytes (``_pool_room``)
    _make_room = _pool_room.make_room
    _victim_for = _pool_room.victim_for
    _count_bytes = _pool_room.count_bytes
    _biggest_sender = _pool_room.biggest_sender
    _push_tail = _pool_room.push_tail
    _lowest_tail = _pool_room.lowest_tail

    def refused_at_block(self, vtx: VerifiedTx, reason: str = "") -> None:
        """``vtx`` was refused when a block was made: remember its id until its expiry (at
        most ``max_refused`` ids, the oldest forgotten first). The same signed bytes
        submitted again are refused at once: a refused transaction consumes no sequence
        number and no fee, so without this it could be replayed every block at one
        signature check of admission for up to 65 checks of block making (round 5, R5-6).
        ``reason`` (its first 160 characters kept) is told to whoever sends it again: a
        sender that missed the drop report learns why (round 15, R15-8)."""
        self._refused.pop(vtx.id, None)
        self._refused[vtx.id] = (vtx.tx.expiry_height, reason[:160])
        while len(self._refused) > self.max_refused:
            del self._refused[next(iter(self._refused))]

    def _check_not_refused(self, tx_id: bytes, state: State) -> None:
        refused = self._refused.get(tx_id)
        if refused is None:
            return
        expiry, reason = refused
        if expiry <= state.height:  # it could not be admitted anyway: forget it
            del self._refused[tx_id]
            return
        why = f" ({reason})" if reason else ""
        raise MempoolRejected(
            f"{REFUSED_AT_BLOCK}{why}; the same signed bytes are not admitted again: "
            "sign a new transaction once what was refused is put right"
        )

    def take_evicted(self) -> list[VerifiedTx]:
        """The transactions evicted for higher fees since the last call."""
        evicted, self._evicted = self._evicted, []
        return evicted

    def _admit_sender(
        self, vtx: VerifiedTx, state: State, queue: dict[int, _Entry], old: _Entry | None
    ) -> bytes | None:
        """Refuse an unfunded sender, or one whose balance does not pay the fees of all
        its pending transactions with this one (``old``, which this one replaces, aside);
        returns the job id when the transaction is admitted as an unfunded sender's claim."""
        tx = vtx.tx
        if state.is_coordinator(tx.sender):
            return None
        self._check_funds(vtx, state, old)
        account = state.account(tx.sender)
        if account.balance > 0 or account.stake > 0:
            return None
        p = vtx.payload
        if not isinstance(p, Claim):
            raise MempoolRejected("the sender's account holds no credits; fund it first")
        e = state.escrow(p.job_id)
        if e is None or not e.claimable_by(tx.sender) or tx.sender in e.claimed:
            raise MempoolRejected(
                "an unfunded account may only claim from an open escrow, or one holding its "
                "reserved price"
            )
        pending = self._unfunded_claims.get(p.job_id, {})
        if tx.sender in pending:
            raise MempoolRejected(
                "a claim of this sender for this job is already pending; it may have one"
            )
        if len(pending) >= e.max_payees:
            raise MempoolRejected("this escrow already has as many claims pending as payees")
        check_unfunded_claim(p, e, tx.sender, state, self.messages)
        return p.job_id

    def _check_funds(
        self, vtx: VerifiedTx, state: State, old: _Entry | None, payout: int = 0
    ) -> None:
        """Refuse ``vtx`` unless its sender's balance pays its fee on top of the fees of
        all its pending transactions (``old``, which it replaces, aside). A claim's
        ``payout`` pays its own fee first (the ledger takes it out of the payout). A
        coordinator's claim is funded as any provider's: its exemption is for the rest of
        its transactions (``_admit_sender``), and a claim the ledger's fee rule would
        refuse has no place in the pool."""
        tx = vtx.tx
        balance = state.account(tx.sender).balance
        if tx.fee > balance + payout:
            what = f"balance {balance}" + (f" and the claim's payout {payout}" if payout else "")
            raise MempoolRejected(f"{what} cannot pay the fee {tx.fee}")
        queue = self._by_sender.get(tx.sender, {})
        claims = self._claims.of(tx.sender)
        pledged = sum(e.pledge for e in (*queue.values(), *claims.values()))
        pledged -= old.pledge if old is not None else 0
        if pledged + max(0, tx.fee - payout) > balance:
            raise MempoolRejected(
                f"balance {balance} cannot pay the fee {tx.fee} on top of the fees "
                f"{pledged} of the sender's {len(queue) + len(claims)} pending transactions"
            )

    def _forget(self, vtx: VerifiedTx, bucket: bytes = b"") -> None:
        """``bucket``: whose share it took (an unsequenced claim's escrow owner)."""
        if vtx.id not in self._ids:
            return
        self._ids.discard(vtx.id)
        self._count_bytes(bucket or vtx.sender, -len(vtx.raw))
        slashed = self._slash_key(vtx)
        if slashed is not None and self._slashes.get(slashed) == vtx.id:
            del self._slashes[slashed]
        if isinstance(vtx.payload, Claim):
            pending = self._unfunded_claims.get(vtx.payload.job_id)
            if pending is not None and pending.get(vtx.sender) == vtx.id:
                del pending[vtx.sender]
                if not pending:
                    del self._unfunded_claims[vtx.payload.job_id]

    def remove(self, vtx: VerifiedTx) -> list[VerifiedTx]:
        """Remove ``vtx`` and, since they would wait behind its hole, its sender's later
        pending transactions; returns those later ones (nothing if ``vtx`` is not pending,
        or is an unsequenced claim)."""
        if vtx.unsequenced:
            self._drop_claim(vtx)
            return []
        queue = self._by_sender.get(vtx.sender)
        if queue is None:
            return []
        entry = queue.get(vtx.tx.seq)
        if entry is None or entry.vtx.id != vtx.id:
            return []
        later: list[VerifiedTx] = []
        seq = vtx.tx.seq
        while seq in queue:
            gone = queue.pop(seq)
            self._forget(gone.vtx)
            if gone is not entry:
                later.append(gone.vtx)
            seq += 1
        below = queue.get(vtx.tx.seq - 1)
        if below is not None:
            self._push_tail(below)  # its sender's last now
        if not queue:
            del self._by_sender[vtx.sender]
        return later

    def select(self, state: State, limit: int) -> list[VerifiedTx]:
        """Up to ``limit`` candidates for the next block, the highest fee density first,
        then round robin by sender (``_pool_order.py``), each sender's in sequence order
        starting at its next sequence number."""
        return list(itertools.islice(self.candidates(state), limit))

    def candidates(self, state: State, room: BlockBudget | None = None) -> Iterator[VerifiedTx]:
        """Every candidate in the order :meth:`select` gives, made as they are taken (the
        block builder takes them until the block is full, whatever it refuses on the way;
        the pool must not change meanwhile). With ``room``, the budget of the block being
        built (spent by the caller as it takes them), only those that fit what is left
        when they come up: the others are passed over, with their senders' later ones, or
        set aside unseen (``_pool_order.py``)."""
        return _pool_order.candidates(self, state, room)

    def prune(self, state: State) -> list[tuple[VerifiedTx, str]]:
        """Drop what ``state`` made stale: applied or replayed seqs silently; expired ones,
        and each sender's later ones behind them, with the reason their senders should
        hear (returned, in sequence order)."""
        dropped: list[tuple[VerifiedTx, str]] = []
        while self._refused:  # the oldest remembered refusals, once expired
            oldest = next(iter(self._refused))
            if self._refused[oldest][0] > state.height:
                break
            del self._refused[oldest]
        for sender in list(self._by_sender):
            queue = self._by_sender[sender]
            next_seq = state.next_seq(sender)
            for seq in [s for s in queue if s < next_seq]:
                self._forget(queue.pop(seq).vtx)
            seq = next_seq
            while seq in queue and queue[seq].vtx.tx.expiry_height > state.height:
                seq += 1
            if queue and len(queue) != seq - next_seq:  # an expired one (or a hole) at seq
                first = queue.get(seq)
                if first is not None:
                    expiry = first.vtx.tx.expiry_height
                    why = f"expired at height {expiry} before it was in a block"
                    dropped.append((first.vtx, why))
                    behind = f"{DROPPED_BEHIND} {seq}, which {why}"
                    dropped += [(v, behind) for v in self.remove(first.vtx)]
                else:
                    behind = f"{DROPPED_BEHIND} {seq}, which is not pending"
                    for s in sorted(s for s in queue if s > seq):
                        dropped.append((queue.pop(s).vtx, behind))
                        self._forget(dropped[-1][0])
                    if seq - 1 in queue:
                        self._push_tail(queue[seq - 1])
            if not queue:
                self._by_sender.pop(sender, None)
        for entry, reason in self._claims.stale(state):
            self._forget(entry.vtx, entry.bucket)
            if reason is not None:
                dropped.append((entry.vtx, reason))
        return dropped
