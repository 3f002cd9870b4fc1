"""Money transactions as intents: kept until the ledger shows them applied or impossible.

A node's lock, settle, refund and claim are each an :class:`Intent`, one per job and kind,
kept in SQLite in the data directory (:class:`IntentStore`) from the moment the machine
asks for it until the chain resolves it. :class:`IntentBook` holds the rules and does no
I/O: the driver tells it what happened (a transaction signed, a transaction refused, a new
block) and carries out the actions it returns (:class:`Submit`, :class:`Resolved`).

The rules (specs/daemon.md, "Money transactions are intents"):

- The goal is read from the escrow in the state, never from an answer: a lock is done
  once the job's escrow exists with us as its owner; a settle or a refund once the escrow
  is closed or has left the state (closed escrows are pruned); a claim once we are in its
  ``claimed`` list or were paid, and impossible once the escrow closed or its expiry came.
- A transaction that was signed (sequence number ``seq``, valid up to ``tx_expiry``) may
  still apply while the chain's ``next_seq`` of ours is at most ``seq`` and the height at
  most ``tx_expiry``: the intent waits. A timeout changes nothing (its outcome is
  unknown); only the chain or a definite refusal does.
- Once its transaction can no longer apply and the goal is not reached: a lock fails (the
  job's escrow is not locked, nothing was taken); a settle, refund or claim is signed
  again with a fresh sequence number, when its window is open (a refund from the escrow's
  expiry height, a claim before ``expiry_height``, with a plain receipt from
  ``claim_height``, with a sealed one up to its ``claim_by``, after which it is
  impossible). A claim whose sealed ``claim_by`` is not above the height it was made at is
  resolved at once, never submitted (it could only be refused).
- A definite refusal (the coordinator's, or a drop reported from its block) fails a lock
  at once, unless the mempool was only full (refused or evicted for room: signed again at
  the next block, until the escrow's expiry or ``MAX_REFUSALS``); a claim with a sealed
  receipt is signed again at the next block (its window, up to ``claim_by``, is shorter
  than ``RETRY_BLOCKS``); another settle, refund or claim tries again ``RETRY_BLOCKS``
  later, or at the next block if it was refused or evicted only for room (not counted);
  a settle or claim gives up after ``MAX_REFUSALS`` counted refusals (an escrow left open
  is then refunded at its expiry); a refund never does, it is tried every
  ``RETRY_BLOCKS * MAX_REFUSALS`` blocks from then on.
- Nothing is decided about an escrow before the local state has reached the height at
  which the intent was made (a node catching up after a restart has not seen it yet).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import ledger
import protocol

from .._sqlite import SmallStore

log = logging.getLogger(__name__)

M = TypeVar("M", bound=protocol.Message)

Kind = Literal["lock", "settle", "refund", "claim"]
KINDS: tuple[Kind, ...] = ("lock", "settle", "refund", "claim")
#: After a definite refusal, a settle, refund or claim is tried again this many blocks later.
RETRY_BLOCKS = 5
#: Definite refusals after which an intent gives up.
MAX_REFUSALS = 8
#: How the coordinator's mempool says it had no room for a transaction, at submission and
#: in a drop report (the wire carries only the text; ``ledger/_mempool.py``).
POOL_FULL = "the mempool is full"
EVICTED = "evicted from the full mempool"


class Chain(Protocol):
    """What the book reads of the ledger state (a :class:`ledger.State` is one)."""

    @property
    def height(self) -> int: ...

    def next_seq(self, account: bytes) -> int: ...

    def escrow(self, job_id: bytes) -> ledger.Escrow | None: ...


@dataclass(slots=True)
class Intent:
    """One money transaction the node wants in the ledger."""

    job_id: bytes
    kind: Kind
    #: The payload's canonical bytes (``protocol.pack(payload.wire())``).
    payload: bytes
    #: The local height when the intent was made: nothing is decided below it.
    made_height: int
    #: A cap on the transaction's expiry height (a lock: the escrow's own expiry).
    expiry_cap: int | None = None
    #: The transaction out, if one was signed: its sequence number and expiry height.
    seq: int | None = None
    tx_expiry: int = 0
    refusals: int = 0
    reason: str = ""
    #: Not before this height is it submitted again (after a refusal).
    retry_at: int = 0
    #: Handed to the queue and not signed yet (not kept: after a restart it is put again).
    queued: bool = False
    #: Refusals for room in a row (not kept): a claim's fee rises with them (``fee_for``).
    room: int = 0
    #: The signed transaction's bytes, meaningful with ``seq`` only (set when it is signed):
    #: sent again after a restart, so that a number signed but never sent holds up nothing
    #: (round 61, R61-3).
    raw: bytes = b""

    @property
    def key(self) -> tuple[bytes, Kind]:
        return (self.job_id, self.kind)

    def decoded(self) -> ledger.Payload:
        return ledger.decode_payload(self.kind, self.payload)

    @classmethod
    def of(cls, payload: ledger.Payload, made_height: int, expiry_cap: int | None = None) -> Intent:
        kind = ledger.KIND_OF[type(payload)]
        if kind not in KINDS:
            raise ValueError(f"a {kind} is not a money transaction")
        job_id = getattr(payload, "job_id")  # noqa: B009 (every money payload names its job)
        assert isinstance(job_id, bytes)
        return cls(job_id, kind, protocol.pack(payload.wire()), made_height, expiry_cap)


@dataclass(frozen=True, slots=True)
class Submit:
    """Sign and submit the intent's transaction (the driver reports ``signed`` back)."""

    intent: Intent


@dataclass(frozen=True, slots=True)
class Resolved:
    """The chain resolved the intent: ``applied`` (its goal is in the state) or not (it
    cannot be any more, ``reason`` says why). It is forgotten."""

    intent: Intent
    applied: bool
    reason: str


Action = Submit | Resolved


class IntentBook:
    """The open intents of one account and the rules above; no I/O."""

    def __init__(self, me: bytes, intents: Iterable[Intent] = ()) -> None:
        """``intents``: those kept from before a restart. A claim's transaction took no
        sequence number and its escrow takes one claim of ours, so a kept claim is signed
        again at once, not after its lost transaction's expiry (30 blocks on, where a
        sealed receipt's ``claim_by`` is a few blocks)."""
        self.me = me
        self.intents: dict[tuple[bytes, Kind], Intent] = {i.key: i for i in intents}
        for intent in self.intents.values():
            if intent.seq == ledger.UNSEQUENCED:
                intent.seq = None

    def __len__(self) -> int:
        return len(self.intents)

    def add(self, intent: Intent) -> list[Action]:
        """A new intent; one per job and kind (a second is ignored: the first is kept)."""
        if intent.key in self.intents:
            return []
        self.intents[intent.key] = intent
        claim_by = _claim_by(intent) if intent.kind == "claim" else None
        if claim_by is not None and intent.made_height >= claim_by:
            # Its first block would be past its sealed receipt's claim_by: a submission
            # could only be refused in a block, dropping our later transactions with it.
            return [self._resolve(intent, False, "its sealed receipt's claim_by passed")]
        intent.queued = True
        return [Submit(intent)]

    def signed(
        self, key: tuple[bytes, Kind], seq: int, tx_expiry: int, raw: bytes = b""
    ) -> Intent | None:
        """Its transaction was signed with ``seq``, valid up to ``tx_expiry``, as ``raw``."""
        intent = self.intents.get(key)
        if intent is not None:
            intent.seq, intent.tx_expiry, intent.queued, intent.raw = seq, tx_expiry, False, raw
        return intent

    def put_back(self, key: tuple[bytes, Kind]) -> Intent | None:
        """The queue put its transaction back to be signed again: the number it was signed
        with is void, and it is queued again. Read under the old number, a gap filler that
        took it first made the book fail a lock whose transaction then landed, or submit a
        settle a second time (review round 66's lead)."""
        intent = self.intents.get(key)
        if intent is not None:
            intent.seq, intent.tx_expiry, intent.queued, intent.raw = None, 0, True, b""
        return intent

    def refused(self, key: tuple[bytes, Kind], reason: str, height: int) -> list[Action]:
        """A definite refusal of its transaction (not a timeout)."""
        intent = self.intents.get(key)
        if intent is None:
            return []
        intent.seq, intent.queued = None, False
        room = POOL_FULL in reason or EVICTED in reason
        intent.room = intent.room + 1 if room else 0
        if not room or intent.kind == "lock":
            # A claim or close refused only for room is not counted: its window bounds
            # it, and flooding the pool for 8 tries cost a provider a silent requester's
            # payment for good (review round 14, R14-2).
            intent.refusals += 1
        intent.reason = reason
        many = intent.refusals >= MAX_REFUSALS
        intent.retry_at = height + RETRY_BLOCKS * (MAX_REFUSALS if many else 1)
        if _soon_again(intent, reason):
            # A sealed claim's window is KEY_DUE_BLOCKS (4) blocks, shorter than
            # RETRY_BLOCKS: one refusal or eviction would be final. A lock refused only
            # for room would fail its job for a pool full at that moment.
            intent.retry_at = height + 1
        elif intent.kind == "lock":
            return [self._resolve(intent, False, reason)]
        # A refund never gives up: nothing else would close the escrow (the requester asks
        # for it once, and the orphan scan skips the jobs it still holds), and it is valid
        # for as long as the escrow is open; after many refusals it is tried less often.
        if many and intent.kind != "refund":
            return [self._resolve(intent, False, reason)]
        return []

    def fee_for(self, intent: Intent, fee: int) -> int:
        """The fee ``intent``'s transaction pays, given the node's (``fee``): a claim
        refused for room ``n`` times in a row offers ``2^n`` times it (at least 1), up to a
        tenth of its payout, which pays it (the ledger takes a claim's fee out of its
        payout). A pool full of free claims at fee 0 otherwise kept a busy honest
        requester's claims, one round of the block at a time, past their ``claim_by``
        (round 15, R15-2); outbidding the raised fee costs the flood that fee a claim."""
        if intent.kind != "claim" or intent.room == 0:
            return fee
        raised = max(1, fee) << min(intent.room - 1, 20)
        return max(fee, min(raised, claim_price(intent.decoded()) // 10))

    def on_block(self, chain: Chain) -> list[Action]:
        """A new state: resolve what it shows, submit again what can no longer apply."""
        actions: list[Action] = []
        for intent in list(self.intents.values()):
            if chain.height < intent.made_height:
                continue  # not synced that far yet
            actions += self._step(intent, chain)
        return actions

    def _step(self, intent: Intent, chain: Chain) -> list[Action]:
        h = chain.height
        e = chain.escrow(intent.job_id)
        match intent.kind:
            case "lock":
                if e is not None:
                    ours = e.owner == self.me
                    return [self._resolve(intent, ours, "" if ours else "another owner's escrow")]
                payload = intent.decoded()
                assert isinstance(payload, ledger.Lock)
                if h >= payload.expiry_height:
                    return [self._resolve(intent, False, "the escrow's expiry height passed")]
            case "settle":
                if e is None or not e.is_open:
                    return [self._resolve(intent, True, "")]
            case "refund":
                # done once nothing is left in it (a settled one may still hold the prices
                # reserved for providers it did not pay)
                if e is None or e.is_done:
                    return [self._resolve(intent, True, "")]
            case "claim":
                if e is not None and (self.me in e.claimed or e.paid_to(self.me) > 0):
                    return [self._resolve(intent, True, "")]
                if e is None or not e.claimable_by(self.me):
                    return [self._resolve(intent, False, "the escrow closed")]
                if h >= e.expiry_height:
                    return [self._resolve(intent, False, "the claim window ended")]
                claim_by = _claim_by(intent)
                if claim_by is not None and h >= claim_by:
                    # its next block would be past it: a submission could only be refused
                    # (as ``add`` judges a new one; round 61, R61-1)
                    return [self._resolve(intent, False, "its sealed receipt's claim_by passed")]
        if intent.queued or self._may_apply(intent, chain):
            return []
        if intent.kind == "lock":
            if intent.seq is not None:
                return [self._resolve(intent, False, "the lock transaction did not reach a block")]
            if intent.refusals == 0 or h < intent.retry_at:
                return []  # only a lock refused for room is kept (``refused``): signed again
        else:
            assert e is not None
            if h < intent.retry_at:
                return []
            if intent.kind == "refund" and h < e.expiry_height:
                return []
            if intent.kind == "claim" and h < e.claim_height and _claim_by(intent) is None:
                return []  # a plain receipt's claim waits for the claim window
        if intent.seq is not None:
            log.info(
                "%s of job %s did not apply (%s); signing it again",
                intent.kind,
                intent.job_id.hex()[:12],
                "unsequenced" if intent.seq == ledger.UNSEQUENCED else f"seq {intent.seq}",
            )
        intent.seq, intent.queued = None, True
        return [Submit(intent)]

    def _may_apply(self, intent: Intent, chain: Chain) -> bool:
        """Whether its signed transaction can still be in a block."""
        return (
            intent.seq is not None
            and chain.next_seq(self.me) <= intent.seq
            and chain.height <= intent.tx_expiry
        )

    def _resolve(self, intent: Intent, applied: bool, reason: str) -> Resolved:
        del self.intents[intent.key]
        return Resolved(intent, applied, reason)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS intents (
    job_id BLOB NOT NULL,
    kind TEXT NOT NULL,
    payload BLOB NOT NULL,
    made_height INTEGER NOT NULL,
    expiry_cap INTEGER,
    seq INTEGER,
    tx_expiry INTEGER NOT NULL,
    refusals INTEGER NOT NULL,
    reason TEXT NOT NULL,
    retry_at INTEGER NOT NULL,
    raw BLOB NOT NULL DEFAULT x'',
    PRIMARY KEY (job_id, kind)
)
"""


class IntentStore(SmallStore):
    """The open intents in SQLite (``intents.sqlite3`` in the data directory); ``path``
    ``None`` keeps them in memory only. Each change is one small transaction (WAL,
    ``synchronous=NORMAL``: a committed change survives a crash of the process). A write
    that fails (a full disk) is logged and counted, never raised: the intent is still
    carried out while the daemon runs, only a restart in that state would lose it."""

    WHAT = "a money intent"

    def __init__(self, path: Path | None) -> None:
        super().__init__(path, _SCHEMA)
        with self._db:
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(intents)")}
            if "raw" not in columns:  # kept by a version before round 61
                self._db.execute("ALTER TABLE intents ADD COLUMN raw BLOB NOT NULL DEFAULT x''")

    def save(self, intent: Intent) -> None:
        row = (
            intent.job_id,
            intent.kind,
            intent.payload,
            intent.made_height,
            intent.expiry_cap,
            intent.seq,
            intent.tx_expiry,
            intent.refusals,
            intent.reason,
            intent.retry_at,
            intent.raw,
        )
        self._write(
            "INSERT OR REPLACE INTO intents (job_id, kind, payload, made_height, expiry_cap, seq,"
            " tx_expiry, refusals, reason, retry_at, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )

    def delete(self, key: tuple[bytes, Kind]) -> None:
        self._write("DELETE FROM intents WHERE job_id = ? AND kind = ?", key)

    def load(self) -> list[Intent]:
        """Every kept intent; a row that does not decode is deleted and reported."""
        rows = self._db.execute(
            "SELECT job_id, kind, payload, made_height, expiry_cap, seq, tx_expiry, refusals,"
            " reason, retry_at, raw FROM intents ORDER BY made_height"
        ).fetchall()
        intents: list[Intent] = []
        for row in rows:
            job_id, kind, payload = row[0], row[1], row[2]
            intent = Intent(bytes(job_id), kind, bytes(payload), *row[3:10])
            intent.raw = bytes(row[10])
            try:
                if kind not in KINDS or len(intent.job_id) != protocol.HASH_SIZE:
                    raise ValueError(f"not a money intent ({kind!r})")
                intent.decoded()
            except (ValueError, ledger.LedgerError) as exc:
                log.warning("dropping a kept intent that does not decode: %s", exc)
                self.delete((bytes(job_id), kind))
                continue
            intents.append(intent)
        return intents


def overdue_escrows(
    escrows: Iterable[tuple[bytes, ledger.Escrow]], height: int, margin: int
) -> list[tuple[bytes, ledger.Escrow]]:
    """The escrows still open more than ``margin`` blocks past their expiry at ``height``:
    what the invariant "every escrow closes" says must not exist while the owners' nodes
    run (``aimx ledger verify --open-escrows``)."""
    return [(j, e) for j, e in escrows if not e.is_done and height > e.expiry_height + margin]


def _soon_again(intent: Intent, reason: str) -> bool:
    """Whether a refused intent is signed again at the next block, not ``RETRY_BLOCKS``
    later: a claim with a sealed receipt (until its ``claim_by``), and any refused or
    evicted only because the coordinator's mempool was full (a lock until its escrow's
    expiry, failing after ``MAX_REFUSALS`` such refusals; the others uncounted)."""
    if intent.kind == "claim" and _claim_by(intent) is not None:
        return True
    return POOL_FULL in reason or EVICTED in reason


def _claim_by(intent: Intent) -> int | None:
    """A claim intent's sealed receipt's ``claim_by`` (claimable at once, up to that height);
    ``None`` for a plain receipt (claimable from the claim window)."""
    return sealed_claim_by(intent.decoded())


def _carried(data: bytes, cls: type[M]) -> M | None:
    """A signed message our own claim carries, decoded on the chain it names (``None`` if
    it does not decode)."""
    try:
        chain = protocol.unpack(data)[1]
        message: M = protocol.decode(data, chain, cls).message
    except (protocol.ProtocolError, IndexError, TypeError):
        return None
    return message


def claim_price(payload: ledger.Payload) -> int:
    """The price of a claim of ours (its Award's; 0 for any other payload)."""
    award = _carried(payload.award, protocol.Award) if isinstance(payload, ledger.Claim) else None
    return award.price if award is not None else 0


def sealed_claim_by(payload: ledger.Payload) -> int | None:
    """The ``claim_by`` of a claim of ours carrying a sealed receipt; ``None`` for any other
    payload (a plain receipt's claim included)."""
    if not isinstance(payload, ledger.Claim):
        return None
    receipt = _carried(payload.receipt, protocol.Receipt)
    return receipt.claim_by if receipt is not None and receipt.sealed else None
