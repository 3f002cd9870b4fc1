"""The mutable overlay over a :class:`~ledger._state.State` while one block is applied:
the accounts and escrows the block changed, releases and prunes, and the new state with
only the touched buckets rehashed (``Draft.finish``)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from protocol import content_hash

from ._genesis import Genesis
from ._state import (
    ACCOUNT_PREFIX,
    EMPTY_BUCKET,
    ESCROW_PREFIX,
    GLOBALS_KEY,
    Account,
    Escrow,
    State,
    bucket_of,
    decay,
    leaf_hash,
    root_of_buckets,
)


@dataclass(slots=True)
class Draft:
    """A mutable overlay over a :class:`State` while one block is applied."""

    base: State
    height: int
    accounts: dict[bytes, Account] = field(default_factory=dict)
    escrows: dict[bytes, Escrow] = field(default_factory=dict)
    new_releases: list[tuple[int, bytes]] = field(default_factory=list)
    released_upto: int = 0
    #: Closed escrows this block removes (past ``ESCROW_RETENTION``), and how many of the
    #: base's prune entries it has dealt with.
    pruned: set[bytes] = field(default_factory=set)
    pruned_upto: int = 0
    minted: int = 0
    burned: int = 0
    fees: int = 0
    #: Accounts each applied transaction changed, in block order (the history index).
    tx_accounts: list[tuple[bytes, ...]] = field(default_factory=list)
    _current: set[bytes] | None = None

    def put(self, account: bytes, value: Account) -> None:
        """Write an account (recording it as concerned by the current transaction)."""
        self.accounts[account] = value
        if self._current is not None:
            self._current.add(account)

    def note(self, account: bytes) -> None:
        """Record that the current transaction concerns ``account`` without changing it."""
        if self._current is not None:
            self._current.add(account)

    def begin_tx(self) -> None:
        self._current = set()

    def end_tx(self) -> None:
        assert self._current is not None
        self.tx_accounts.append(tuple(sorted(self._current)))
        self._current = None

    def __post_init__(self) -> None:
        self.minted, self.burned, self.fees = self.base.minted, self.base.burned, self.base.fees

    @property
    def genesis(self) -> Genesis:
        return self.base.genesis

    @property
    def epoch(self) -> int:
        return self.height // self.base.genesis.reputation_half_life

    def account(self, account: bytes) -> Account:
        a = self.accounts.get(account)
        if a is not None:
            return a
        return self.base._accounts.get(account) or Account()

    def escrow(self, job_id: bytes) -> Escrow | None:
        e = self.escrows.get(job_id)
        if e is not None:
            return e
        return None if job_id in self.pruned else self.base._escrows.get(job_id)

    def prune(self) -> None:
        """Remove closed escrows whose retention ends at this height (at the start of the
        block, so that its transactions no longer see them)."""
        prunes = self.base._prunes
        i = 0
        while i < len(prunes) and prunes[i][0] <= self.height:
            e = self.base._escrows.get(prunes[i][1])
            if e is not None and e.is_done:
                self.pruned.add(prunes[i][1])
            i += 1
        self.pruned_upto = i

    def mature(self) -> None:
        """Return unbonded stake whose release height has come to its balance."""
        releases = self.base._releases
        i = 0
        while i < len(releases) and releases[i][0] <= self.height:
            acct = releases[i][1]
            a = self.account(acct)
            due = sum(amt for h, amt in a.unbonding if h <= self.height)
            if due or (a.unbonding and a.unbonding[0][0] <= self.height):
                self.accounts[acct] = Account(
                    a.balance + due,
                    a.next_seq,
                    a.stake,
                    tuple(u for u in a.unbonding if u[0] > self.height),
                    a.rep_s,
                    a.rep_f,
                    a.rep_epoch,
                )
            i += 1
        self.released_upto = i

    def add_reputation(self, account: bytes, success: int, failure: int) -> None:
        a = self.account(account)
        epochs = self.epoch - a.rep_epoch
        self.put(
            account,
            Account(
                a.balance,
                a.next_seq,
                a.stake,
                a.unbonding,
                decay(a.rep_s, epochs) + success,
                decay(a.rep_f, epochs) + failure,
                self.epoch,
            ),
        )

    def check_invariants(self) -> str | None:
        """The ledger's invariants over what this block changed (O(changed), so every
        block is checked): credits conserved (what the changed accounts, escrows and fees
        hold moved exactly as minted − burned did), nothing negative, no escrow paid past
        its lock. Returns the first failure, or None."""
        base = self.base
        held_delta = self.fees - base.fees
        for key, new in self.accounts.items():
            if min(new.balance, new.stake, *(a for _, a in new.unbonding), 0) < 0:
                return f"account {key.hex()} would go negative"
            old = base._accounts.get(key)
            held_delta += new.balance + new.stake + new.unbonding_total
            if old is not None:
                held_delta -= old.balance + old.stake + old.unbonding_total
        for key, esc in self.escrows.items():
            if esc.remaining < 0 or esc.total_paid + esc.remaining > esc.locked:
                return f"escrow {key.hex()} would pay more than was locked"
            before = base._escrows.get(key)
            held_delta += esc.remaining
            if before is not None:
                held_delta -= before.remaining
        issued_delta = (self.minted - self.burned) - (base.minted - base.burned)
        if held_delta != issued_delta:
            return (
                f"credits not conserved: holdings changed by {held_delta}, "
                f"minted − burned by {issued_delta}"
            )
        return None

    def finish(self, block_hash: bytes) -> State:
        """The new state after this block (the base is not modified)."""
        base = self.base
        accounts = dict(base._accounts)
        accounts.update(self.accounts)
        escrows = dict(base._escrows)
        removed = [k for k in self.pruned if k not in self.escrows]
        for k in removed:
            del escrows[k]
        escrows.update(self.escrows)
        closing = sorted(
            (e.prune_height, k)
            for k, e in self.escrows.items()
            if e.is_done
            and (k not in base._escrows or not base._escrows[k].is_done or k in self.pruned)
        )
        new = object.__new__(State)
        new.genesis = base.genesis
        new.height = self.height
        new.last_block_hash = block_hash
        new.minted, new.burned, new.fees = self.minted, self.burned, self.fees
        new._accounts = accounts
        new._escrows = escrows
        new._releases = base._releases[self.released_upto :] + tuple(self.new_releases)
        kept = base._prunes[self.pruned_upto :]
        if not closing or not kept or closing[0] >= kept[-1]:
            new._prunes = kept + tuple(closing)  # what the merge gives, without its loop
        else:
            new._prunes = tuple(heapq.merge(kept, closing))
        touched = [GLOBALS_KEY]
        touched += [ACCOUNT_PREFIX + k for k in self.accounts]
        touched += [ESCROW_PREFIX + k for k in self.escrows]
        buckets = list(base._buckets)
        roots = list(base._bucket_roots)
        dirty: dict[int, dict[bytes, bytes]] = {}
        values: dict[bytes, bytes] = {}
        for key in touched:
            b = bucket_of(key)
            d = dirty.get(b)
            if d is None:
                d = dirty[b] = dict(buckets[b])
            value = new.leaf(key)
            assert value is not None
            values[key] = value
            d[key] = leaf_hash(key, value)
        for k in removed:
            key = ESCROW_PREFIX + k
            b = bucket_of(key)
            d = dirty.get(b)
            if d is None:
                d = dirty[b] = dict(buckets[b])
            del d[key]
        for b, d in dirty.items():
            # bucket_root(d), sorting once; the bucket is kept in key order, so the next
            # block's sort of it is a near-linear merge of the few new keys
            keys = sorted(d)
            hashes = list(map(d.__getitem__, keys))
            buckets[b] = dict(zip(keys, hashes, strict=True))
            roots[b] = content_hash(b"".join(hashes)) if hashes else EMPTY_BUCKET
        new._buckets = buckets
        new._bucket_roots = roots
        new.root = root_of_buckets(roots)
        new.touched = frozenset(touched)
        new.removed = frozenset(ESCROW_PREFIX + k for k in removed)
        new._touched_values = values
        new.tx_accounts = tuple(self.tx_accounts)
        return new
