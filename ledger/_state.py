"""The ledger state, its leaves, and the state root.

The state is a set of *leaves*, each a key and the canonical msgpack of a value:

- ``00`` (1 byte): the chain totals ``[height, minted, burned, fees]``;
- ``01 || account`` (33 bytes): an :class:`Account`;
- ``02 || job_id`` (33 bytes): an :class:`Escrow`.

``leaf_hash = BLAKE2b-256(key || value)``. Leaves fall into 256 buckets by the last byte
of their key; a bucket's root is the BLAKE2b-256 of its leaf hashes concatenated in key
order (the hash of the empty string for an empty bucket); the state root is
``BLAKE2b-256(b"aimx/state/1" || root_0 || ... || root_255)``. Only buckets touched by a
block are rehashed. :func:`compute_root` is the reference computation from scratch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from fractions import Fraction
from typing import Any, NamedTuple

from protocol import content_hash, pack, unpack

from ._errors import ChainVerificationError, StoreError
from ._genesis import Genesis

GLOBALS_KEY = b"\x00"
ACCOUNT_PREFIX = b"\x01"
ESCROW_PREFIX = b"\x02"
STATE_TAG = b"aimx/state/1"
#: Most credits ever minted (``minted``, genesis included): the totals leaf holds it as a
#: u64. A mint past it is refused (``_rules.py``); ``burned`` (slashes, of minted credits)
#: never exceeds ``minted``, and ``fees`` is held, so within the supply.
MAX_MINTED = (1 << 64) - 1
EMPTY_BUCKET = content_hash(b"")


class ProviderRecord(NamedTuple):
    """A provider's record as a requester reads it, in the order of ``scheduler.Reputation``'s
    fields (``scheduler.Reputation(*record)``): its score in per mille, its settled jobs
    (success weight in whole units) and its failure weight in whole units, both decayed to
    the state's height as the score is, its stake, and its stake unbonding as ``(release
    height, amount)`` pairs (a slash takes from it until released, and it counts towards
    what a slash's witness holds until then)."""

    score_permille: int
    settled_jobs: int
    failures: int
    stake: int
    unbonding: tuple[tuple[int, int], ...]


class EscrowStatus(IntEnum):
    """Where an escrow is; its leaf stores the number."""

    OPEN = 0
    SETTLED = 1
    REFUNDED = 2


#: One unit of reputation weight (a settled job, an attestation) in fixed point.
REP_UNIT = 1 << 16
#: Beta prior: a newcomer starts at PRIOR_S / (PRIOR_S + PRIOR_F) = 1/2.
PRIOR_S, PRIOR_F = 1, 1
#: Failure weight of a slash, in units.
SLASH_WEIGHT = 4
#: A closed escrow leaves the state this many blocks after its expiry or the block that
#: closed it, whichever is later: until then attestations and slash evidence can still
#: name it, and after its expiry its job can no longer be locked again.
ESCROW_RETENTION = 300


@dataclass(frozen=True, slots=True)
class Account:
    """One account's leaf. ``unbonding`` holds ``(release_height, amount)`` in order."""

    balance: int = 0
    next_seq: int = 0
    stake: int = 0
    unbonding: tuple[tuple[int, int], ...] = ()
    rep_s: int = 0
    rep_f: int = 0
    rep_epoch: int = 0

    @property
    def unbonding_total(self) -> int:
        return sum(a for _, a in self.unbonding)

    def encode(self) -> bytes:
        return pack(
            [
                self.balance,
                self.next_seq,
                self.stake,
                [[h, a] for h, a in self.unbonding],
                self.rep_s,
                self.rep_f,
                self.rep_epoch,
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> Account:
        v: Any = unpack(data)
        return cls(v[0], v[1], v[2], tuple((h, a) for h, a in v[3]), v[4], v[5], v[6])


@dataclass(frozen=True, slots=True)
class Escrow:
    """One job's escrow. ``paid``, ``claimed`` and ``attested`` are kept sorted."""

    owner: bytes
    locked: int
    remaining: int
    claim_height: int
    expiry_height: int
    max_per_payee: int
    max_payees: int
    status: EscrowStatus = EscrowStatus.OPEN
    paid: tuple[tuple[bytes, int], ...] = ()
    claimed: tuple[bytes, ...] = ()
    attested: tuple[tuple[bytes, bytes], ...] = ()
    #: The job's redundancy (from the JobSpec its lock carried): before expiry, a settle
    #: must pay at least this many providers (see ``_rules``).
    required_payees: int = 1
    #: Providers slashed on this job's evidence (each at most once), sorted.
    slashed: tuple[bytes, ...] = ()
    #: The height of the block that settled or refunded it (0 while open).
    closed_height: int = 0
    #: Unseal keys revealed by claims, by provider, sorted: what opens the output bytes
    #: the owner already holds.
    unsealed: tuple[tuple[bytes, bytes], ...] = ()
    #: Providers the owner reserved a place and a price for (``reserve``), by provider,
    #: sorted: each is paid that price only, by the owner's settle or its own claim, and
    #: until it is paid its price stays in the escrow (a settle leaves it there) up to the
    #: escrow's expiry.
    reserved: tuple[tuple[bytes, int], ...] = ()

    @property
    def is_open(self) -> bool:
        return self.status == EscrowStatus.OPEN

    @property
    def is_done(self) -> bool:
        """Closed with nothing left in it: only then does it leave the state."""
        return self.status != EscrowStatus.OPEN and self.remaining == 0

    def final_at(self, height: int) -> bool:
        """Whether nothing more can be paid from it at ``height``: closed, and empty or
        past its expiry (a settled one may hold reserved prices, claimable until then)."""
        return not self.is_open and (self.remaining == 0 or height >= self.expiry_height)

    def reserved_for(self, provider: bytes) -> int:
        """The price reserved for ``provider`` (0 if none)."""
        return next((a for p, a in self.reserved if p == provider), 0)

    @property
    def held(self) -> int:
        """What the escrow holds for reserved providers not paid yet."""
        return sum(a for p, a in self.reserved if self.paid_to(p) == 0)

    def claimable_by(self, provider: bytes) -> bool:
        """Whether a claim of ``provider``'s can still apply to the escrow as it stands
        (its receipt, window and expiry aside): it is open, or it was settled without
        paying ``provider``'s reserved price, which it still holds."""
        if self.is_open:
            return True
        return self.status == EscrowStatus.SETTLED and (
            self.reserved_for(provider) > 0 and self.paid_to(provider) == 0
        )

    @property
    def total_paid(self) -> int:
        return sum(a for _, a in self.paid)

    @property
    def prune_height(self) -> int:
        """The height of the block that removes this escrow from the state, once closed."""
        return max(self.expiry_height, self.closed_height) + ESCROW_RETENTION

    def paid_to(self, provider: bytes) -> int:
        return next((a for p, a in self.paid if p == provider), 0)

    def unsealed_by(self, provider: bytes) -> bytes:
        """The unseal key ``provider``'s claim revealed ("" if none)."""
        return next((k for p, k in self.unsealed if p == provider), b"")

    @property
    def places(self) -> frozenset[bytes]:
        """The providers holding a place in the escrow: paid, or with one reserved."""
        return frozenset([*(p for p, _ in self.paid), *(p for p, _ in self.reserved)])

    def parties(self) -> frozenset[bytes]:
        """The owner and every provider paid from this escrow."""
        return frozenset([self.owner, *(p for p, _ in self.paid)])

    def encode(self) -> bytes:
        return pack(
            [
                self.owner,
                self.locked,
                self.remaining,
                self.claim_height,
                self.expiry_height,
                self.max_per_payee,
                self.max_payees,
                int(self.status),
                [[p, a] for p, a in self.paid],
                list(self.claimed),
                [[f, t] for f, t in self.attested],
                self.required_payees,
                list(self.slashed),
                self.closed_height,
                [[p, k] for p, k in self.unsealed],
                # A trailing field, left out while empty: an escrow with no reservation
                # encodes as before it existed (its chain's state roots are unchanged).
                *([[[p, a] for p, a in self.reserved]] if self.reserved else []),
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> Escrow:
        v: Any = unpack(data)
        return cls(
            v[0],
            v[1],
            v[2],
            v[3],
            v[4],
            v[5],
            v[6],
            EscrowStatus(v[7]),
            tuple((p, a) for p, a in v[8]),
            tuple(v[9]),
            tuple((f, t) for f, t in v[10]),
            v[11],
            tuple(v[12]),
            v[13],
            tuple((p, k) for p, k in v[14]),
            tuple((p, a) for p, a in v[15]) if len(v) > 15 else (),
        )


def leaf_hash(key: bytes, value: bytes) -> bytes:
    return content_hash(key + value)


def bucket_of(key: bytes) -> int:
    return key[-1]


def root_of_buckets(bucket_roots: Iterable[bytes]) -> bytes:
    return content_hash(STATE_TAG + b"".join(bucket_roots))


def bucket_root(leaves: dict[bytes, bytes]) -> bytes:
    if not leaves:
        return EMPTY_BUCKET
    return content_hash(b"".join(map(leaves.__getitem__, sorted(leaves))))


def compute_root(leaves: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The state root of ``(key, value)`` leaves, computed from scratch."""
    buckets: list[dict[bytes, bytes]] = [{} for _ in range(256)]
    for key, value in leaves:
        buckets[bucket_of(key)][key] = leaf_hash(key, value)
    return root_of_buckets(bucket_root(b) for b in buckets)


def decay(value: int, epochs: int) -> int:
    """Halve ``value`` once per elapsed epoch, rounding down."""
    return value >> epochs if epochs < 64 else 0


class State:
    """An immutable ledger state at one height. Build new states with :mod:`ledger` apply."""

    __slots__ = (
        "_accounts",
        "_bucket_roots",
        "_buckets",
        "_escrows",
        "_prunes",
        "_releases",
        "_touched_values",
        "burned",
        "fees",
        "genesis",
        "height",
        "last_block_hash",
        "minted",
        "removed",
        "root",
        "touched",
        "tx_accounts",
    )

    genesis: Genesis
    height: int
    last_block_hash: bytes
    minted: int
    burned: int
    fees: int
    root: bytes
    #: Leaf keys changed by the block that produced this state (what a store must write).
    touched: frozenset[bytes]
    #: Leaf keys the block that produced this state removed (closed escrows past retention).
    removed: frozenset[bytes]
    #: For the block that produced this state: the accounts each transaction concerned.
    tx_accounts: tuple[tuple[bytes, ...], ...]
    _touched_values: dict[bytes, bytes]
    _accounts: dict[bytes, Account]
    _escrows: dict[bytes, Escrow]
    _releases: tuple[tuple[int, bytes], ...]
    #: ``(prune height, job id)`` of every closed escrow, in order.
    _prunes: tuple[tuple[int, bytes], ...]
    _buckets: list[dict[bytes, bytes]]
    _bucket_roots: list[bytes]

    # --- construction ----------------------------------------------------------------

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> State:
        """The state at height 0."""
        genesis.check()
        accounts = {a.account: Account(balance=a.amount) for a in genesis.balances}
        minted = sum(a.amount for a in genesis.balances)
        return cls._build(genesis, 0, genesis.hash(), minted, 0, 0, accounts, {})

    @classmethod
    def from_leaves(
        cls, genesis: Genesis, last_block_hash: bytes, leaves: Iterable[tuple[bytes, bytes]]
    ) -> State:
        """Rebuild a state from stored leaves (raises :class:`StoreError` if malformed).

        The state root does not cover the last block's hash (a block names the root after
        it), so the caller passes it.
        """
        accounts: dict[bytes, Account] = {}
        escrows: dict[bytes, Escrow] = {}
        totals: list[Any] | None = None
        try:
            for key, value in leaves:
                if key == GLOBALS_KEY:
                    totals = unpack(value)
                elif len(key) == 33 and key[:1] == ACCOUNT_PREFIX:
                    accounts[key[1:]] = Account.decode(value)
                elif len(key) == 33 and key[:1] == ESCROW_PREFIX:
                    escrows[key[1:]] = Escrow.decode(value)
                else:
                    raise StoreError(f"unknown state leaf key {key.hex()}")
        except StoreError:
            raise
        except Exception as exc:  # any decoding failure means the file is damaged
            raise StoreError(f"stored state is corrupt: {exc}") from None
        if totals is None:
            raise StoreError("stored state has no totals leaf; the database is corrupt")
        try:
            height, minted, burned, fees = totals
        except (TypeError, ValueError):
            raise StoreError("stored totals leaf is corrupt") from None
        return cls._build(genesis, height, last_block_hash, minted, burned, fees, accounts, escrows)

    @classmethod
    def _build(
        cls,
        genesis: Genesis,
        height: int,
        last_block_hash: bytes,
        minted: int,
        burned: int,
        fees: int,
        accounts: dict[bytes, Account],
        escrows: dict[bytes, Escrow],
    ) -> State:
        self = object.__new__(cls)
        self.genesis = genesis
        self.height = height
        self.last_block_hash = last_block_hash
        self.minted, self.burned, self.fees = minted, burned, fees
        self._accounts = accounts
        self._escrows = escrows
        self._releases = tuple(
            sorted((h, acct) for acct, a in accounts.items() for h, _ in a.unbonding)
        )
        self._prunes = tuple(
            sorted((e.prune_height, job) for job, e in escrows.items() if e.is_done)
        )
        self._buckets = [{} for _ in range(256)]
        for key, value in self.leaves():
            self._buckets[bucket_of(key)][key] = leaf_hash(key, value)
        self._bucket_roots = [bucket_root(b) for b in self._buckets]
        self.root = root_of_buckets(self._bucket_roots)
        self._touched_values = dict(self.leaves())
        self.touched = frozenset(self._touched_values)
        self.removed = frozenset()
        self.tx_accounts = ()
        return self

    # --- read API ----------------------------------------------------------------------

    @property
    def chain_id(self) -> str:
        return self.genesis.chain_id

    def account(self, account: bytes) -> Account:
        """The account's leaf (an empty account if it never appeared)."""
        return self._accounts.get(account) or Account()

    def balance(self, account: bytes) -> int:
        """Spendable balance in micro-credits."""
        a = self._accounts.get(account)
        return a.balance if a else 0

    def next_seq(self, account: bytes) -> int:
        """The sequence number the account's next transaction must carry."""
        a = self._accounts.get(account)
        return a.next_seq if a else 0

    def escrow(self, job_id: bytes) -> Escrow | None:
        """The escrow locked for ``job_id``, if any."""
        return self._escrows.get(job_id)

    def reputation(self, account: bytes) -> Fraction:
        """The account's reputation at this height: an exact rational in (0, 1)."""
        a = self.account(account)
        epochs = self.height // self.genesis.reputation_half_life - a.rep_epoch
        s = decay(a.rep_s, epochs)
        f = decay(a.rep_f, epochs)
        return Fraction(PRIOR_S * REP_UNIT + s, (PRIOR_S + PRIOR_F) * REP_UNIT + s + f)

    def reputation_weights(self, account: bytes) -> tuple[int, int]:
        """The account's success and failure weights at this height, decayed (units of
        ``REP_UNIT``, as stored)."""
        a = self.account(account)
        epochs = self.height // self.genesis.reputation_half_life - a.rep_epoch
        return decay(a.rep_s, epochs), decay(a.rep_f, epochs)

    def provider_record(self, account: bytes) -> ProviderRecord:
        """What a requester reads of ``account`` as a provider (see :class:`ProviderRecord`)."""
        a = self.account(account)
        # Decayed to this height, as the score and the failures are: the stored weight is
        # decayed only at the account's next reputation event, so that an idle provider kept
        # its count, and one more payment (anyone's settle) then lowered it (6 to 1 after 6
        # idle half-lives: round 24, R24B-3). Decayed here, a payment never lowers it.
        successes, failures = self.reputation_weights(account)
        return ProviderRecord(
            score_permille=min(1000, int(self.reputation(account) * 1000)),
            settled_jobs=successes // REP_UNIT,
            failures=failures // REP_UNIT,
            stake=a.stake,
            unbonding=a.unbonding,
        )

    def reputation_float(self, account: bytes) -> float:
        """A float view of :meth:`reputation`, for display only."""
        return float(self.reputation(account))

    def is_coordinator(self, account: bytes) -> bool:
        return account in self.genesis.coordinators

    def accounts(self) -> Iterator[tuple[bytes, Account]]:
        return iter(sorted(self._accounts.items()))

    def escrows(self) -> Iterator[tuple[bytes, Escrow]]:
        return iter(sorted(self._escrows.items()))

    def totals_value(self) -> list[Any]:
        return [self.height, self.minted, self.burned, self.fees]

    def leaves(self) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, value)`` leaf of the state."""
        yield GLOBALS_KEY, pack(self.totals_value())
        for acct, a in self._accounts.items():
            yield ACCOUNT_PREFIX + acct, a.encode()
        for job, e in self._escrows.items():
            yield ESCROW_PREFIX + job, e.encode()

    def touched_leaves(self) -> dict[bytes, bytes]:
        """The ``(key, value)`` leaves the last block changed: what a store must write."""
        return dict(self._touched_values)

    def leaf(self, key: bytes) -> bytes | None:
        if key == GLOBALS_KEY:
            return pack(self.totals_value())
        if key[:1] == ACCOUNT_PREFIX and key[1:] in self._accounts:
            return self._accounts[key[1:]].encode()
        if key[:1] == ESCROW_PREFIX and key[1:] in self._escrows:
            return self._escrows[key[1:]].encode()
        return None

    def conservation(self) -> tuple[int, int]:
        """``(held, issued)``: balances + what escrows hold + stakes + fees, and minted −
        burned.

        The two are equal in every valid state.
        """
        held = self.fees
        for a in self._accounts.values():
            held += a.balance + a.stake + a.unbonding_total
        for e in self._escrows.values():
            held += e.remaining
        return held, self.minted - self.burned


def check_invariants(state: State) -> None:
    """Raise :class:`ChainVerificationError` if an invariant of the ledger fails: credits
    are conserved, no amount is negative, no escrow paid more than was locked."""
    held, issued = state.conservation()
    if held != issued:
        raise ChainVerificationError(
            f"height {state.height}: balances, escrows, stakes and fees hold {held} but "
            f"minted − burned is {issued}"
        )
    for acct, a in state.accounts():
        if min(a.balance, a.stake, *(x for _, x in a.unbonding), 0) < 0:
            raise ChainVerificationError(f"height {state.height}: account {acct.hex()} < 0")
    for job, e in state.escrows():
        if e.remaining < 0 or e.total_paid + e.remaining > e.locked:
            raise ChainVerificationError(
                f"height {state.height}: escrow {job.hex()} paid more than was locked"
            )
