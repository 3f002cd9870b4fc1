"""What is checked of a transaction without the ledger's state: its envelope, signature,
chain and payload shape (:func:`verify_tx`), and every signed message its payload carries
(:func:`check_embedded`: a settle's Bids, a claim's Award and Receipt, a lock's JobSpec, a
slash's Results), remembered once verified (:class:`VerifiedMessages`). The mempool and a
forwarding node run these at admission; :mod:`._rules` applies the state rules and decodes
carried messages that admission verified without checking them again
(:func:`decode_signed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import protocol
from protocol import (
    Award,
    Bid,
    JobSpec,
    Message,
    ProtocolError,
    Receipt,
    RemoteProtocolError,
    Result,
    Signed,
    Transaction,
)

from ._block import MAX_TX_BYTES
from ._errors import (
    MalformedTransaction,
    MempoolRejected,
)
from ._evidence import MIN_MAJORITY, not_outputs
from ._payloads import (
    KINDS,
    Claim,
    Lock,
    Payload,
    Reserve,
    Settle,
    Slash,
)
from ._state import State

#: The ``seq`` of a claim that takes no sequence number of its sender's (specs/ledger.md,
#: "Validity"): it neither needs nor advances the account's next, so whether it applies
#: touches none of the sender's other transactions. Its replays are refused by the
#: escrow's ``claimed`` set (review rounds 12 and 13, R12-1, R13-3: requesters voiding a
#: sequenced claim in its block left a gap that held back the provider's other claims).
#: ``2^63 - 1``: the largest a signed 64-bit integer (SQLite's) holds.
UNSEQUENCED = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class VerifiedTx:
    """A transaction whose signature, chain and payload have been checked (once).

    ``embedded_checked``: the signed messages its payload carries (a settle's Bids, a
    claim's Award and Receipt, a lock's JobSpec, a slash's Results) were verified too, with
    every rule about them that needs no state (:func:`check_embedded`, at admission): the
    rules then decode them without checking their signatures again. A replica's
    :func:`verify_tx` leaves it false, so the rules verify them when it applies a block."""

    signed: Signed[Transaction]
    payload: Payload
    embedded_checked: bool = False

    @property
    def tx(self) -> Transaction:
        return self.signed.message

    @property
    def id(self) -> bytes:
        return self.signed.id

    @property
    def raw(self) -> bytes:
        return self.signed.raw

    @property
    def sender(self) -> bytes:
        return self.signed.message.sender

    @property
    def unsequenced(self) -> bool:
        """Whether it is a claim signed without a sequence number (:data:`UNSEQUENCED`)."""
        return self.signed.message.seq == UNSEQUENCED and isinstance(self.payload, Claim)


def decode_payload(kind: str, payload: bytes) -> Payload:
    """The payload record of ``kind`` (raises :class:`MalformedTransaction`)."""
    cls = KINDS.get(kind)
    if cls is None:
        raise MalformedTransaction(f"unknown transaction kind {kind!r}")
    try:
        # from_wire checks every field's type, so the generic type walk can be skipped.
        return cls.from_wire(protocol.unpack(payload, check_types=False), kind)
    except ProtocolError as exc:
        raise MalformedTransaction(f"bad {kind} payload: {exc}") from None


def verify_tx(raw: bytes, chain_id: str) -> VerifiedTx:
    """Decode a signed transaction and check signature, chain and payload shape.

    One over ``MAX_TX_BYTES`` (no block may hold it) is refused before any decoding."""
    try:
        signed: Signed[Transaction] = protocol.decode(
            raw, chain_id, Transaction, max_bytes=MAX_TX_BYTES
        )
    except ProtocolError as exc:
        raise MalformedTransaction(f"invalid transaction: {exc}") from None
    return VerifiedTx(signed, decode_payload(signed.message.kind, signed.message.payload))


# --- signed messages carried in a payload ---------------------------------------------

M = TypeVar("M", bound=Message)

#: Most signed messages a :class:`VerifiedMessages` remembers as verified (their content
#: hashes, ~100 bytes each: 6.5 MB at most): the Bids of 1,024 maximal settles.
MAX_VERIFIED_REMEMBERED = 65_536
#: Longest reason a :class:`VerifiedMessages` keeps for a payload that failed: a reason
#: may quote a carried message's tag or chain (up to 4,096 characters), and 65,536 full
#: ones held ~0.27 GiB (round 7, R7-5).
MAX_FAILED_REASON = 200


class VerifiedMessages:
    """The content hashes of the signed messages (exact bytes) verified so far, and of
    the payloads that passed :func:`check_embedded` whole, the latest ``limit``: a message
    seen again is decoded without its signature check, a payload seen again (with the
    same sender and kind) is not looked into. So a transaction re-signed around the same
    payload (a settle refused when a block was made, its 64 Bids unchanged) costs its
    admission one check, not 65, and no more than a transfer's (round 5, R5-6): verifying
    what a sender did not sign anew costs the verifier no more than the sender. A failed
    signature check is never remembered as passed; a payload that failed is remembered as
    failed (with its reason, cut to ``MAX_FAILED_REASON`` characters: no state changes
    that), so signed anew it is refused at once too.

    Memory: at most ``limit`` entries in each of the two dicts: a 32-byte digest (~100
    bytes with its dict slot) per verified one, and per failed one that and a reason of
    at most ``MAX_FAILED_REASON`` characters (~0.6 KiB measured with tracemalloc): ~6.5 MB
    + ~40 MB at the default limit, whatever the refused payloads carried (the full reason
    held ~4.3 KiB each, ~0.27 GiB; round 7, R7-5)."""

    def __init__(self, limit: int = MAX_VERIFIED_REMEMBERED) -> None:
        self.limit = limit
        #: Signatures actually checked (not answered from memory).
        self.checks = 0
        self._known: dict[bytes, None] = {}
        #: Payloads refused (with sender and kind), and why.
        self._failed: dict[bytes, str] = {}

    def __len__(self) -> int:
        return len(self._known)

    def decode(self, raw: bytes, chain_id: str, cls: type[M]) -> M:
        """``raw`` decoded as a signed ``cls`` of ``chain_id`` (a :class:`ProtocolError`
        if it is not one), its signature checked unless these bytes verified before."""
        digest = protocol.content_hash(raw)
        if self.seen(digest):
            return decode_checked(raw, chain_id, cls)
        self.checks += 1
        message: M = protocol.decode(raw, chain_id, cls).message
        self.remember(digest)
        return message

    def seen(self, digest: bytes) -> bool:
        """Whether ``digest`` is remembered (it becomes the most recent if so)."""
        if digest not in self._known:
            return False
        del self._known[digest]
        self._known[digest] = None
        return True

    def remember(self, digest: bytes) -> None:
        self._known[digest] = None
        if len(self._known) > self.limit:
            del self._known[next(iter(self._known))]

    def failed(self, digest: bytes) -> str | None:
        """Why the payload of ``digest`` was refused, if it was (and is remembered)."""
        return self._failed.get(digest)

    def remember_failed(self, digest: bytes, reason: str) -> None:
        """Remember the payload of ``digest`` as failed, ``reason`` cut short
        (:func:`short_reason`)."""
        self._failed[digest] = short_reason(reason)
        if len(self._failed) > self.limit:
            del self._failed[next(iter(self._failed))]


def short_reason(reason: str) -> str:
    """``reason`` cut to at most ``MAX_FAILED_REASON`` characters (an ellipsis marks a
    cut): what a refusal that may quote a peer's long strings keeps and answers."""
    if len(reason) <= MAX_FAILED_REASON:
        return reason
    return reason[: MAX_FAILED_REASON - 1] + "\u2026"


def check_settle_escrow(
    p: Settle, sender: bytes, state: State, *, lock_pending: bool = False
) -> None:
    """Refuse (:class:`MempoolRejected`), before its Bids' signatures are checked, a
    settle that ``state``'s next block would refuse for want of the sender's open escrow
    of the job (none, another's, or closed), unless ``lock_pending`` (a lock of the job by
    the sender is pending in the caller's mempool). One dict look-up: the mempool applies
    it before :func:`check_embedded`, and so does a forwarding node against its replica's
    state (round 5, R5-6; round 7, R7-3, R7-4)."""
    e = state.escrow(p.job_id)
    if e is not None and e.owner == sender and e.is_open:
        return
    if e is None and lock_pending:
        return
    raise MempoolRejected(
        f"the sender has no open escrow of job {p.job_id.hex()} to settle (none, another's, "
        f"or closed, at height {state.height}); settle only an escrow of its own still open"
    )


def decode_checked(raw: bytes, chain_id: str, cls: type[M]) -> M:
    """Decode ``raw``, a signed ``cls`` of ``chain_id`` whose exact bytes were verified
    before (:func:`protocol.decode`), without checking the signature again."""
    value = protocol.unpack(raw, check_types=False)
    if type(value) is not list or len(value) != 5 or value[0] != cls.TAG or value[1] != chain_id:
        raise RemoteProtocolError(f"not a signed {cls.__name__} of chain {chain_id!r}")
    return cls.from_wire(value[2])


def decode_signed(raw: bytes, chain_id: str, cls: type[M], checked: bool) -> M:
    """A signed message a payload carries: verified, unless ``checked`` (at admission)."""
    if checked:
        return decode_checked(raw, chain_id, cls)
    message: M = protocol.decode(raw, chain_id, cls).message
    return message


def check_embedded(
    vtx: VerifiedTx, chain_id: str, known: VerifiedMessages | None = None
) -> VerifiedTx:
    """Check every signed message ``vtx``'s payload carries, with every rule about it that
    needs no state: its signature and chain; a settle's Bids are the paid providers' own,
    for this job, at the paid amount, each provider once; a claim's Award and Receipt name
    the sender, the job and one replica, and the revealed key; a reserve's Award is the
    job's, to its sender; a lock's
    JobSpec is the job's and the sender's; a slash's Results are of one job and hold the
    offender's, as its reason needs. Cheap checks come before signatures.

    Raises :class:`MalformedTransaction` (no chain state can make such a transaction
    valid: the mempool and a forwarding node refuse it, and count it against the peer
    that sent it). Returns ``vtx`` marked ``embedded_checked`` (the rules do not verify
    these messages again). ``known`` remembers what verified, across transactions."""
    p = vtx.payload
    if not isinstance(p, Settle | Claim | Lock | Slash | Reserve):
        return vtx
    if known is None:
        known = VerifiedMessages()
    tx = vtx.tx
    # What is checked depends on the payload, its kind and its sender only (and the chain,
    # which is the caller's): a payload that passed is not looked into again.
    digest = protocol.content_hash(b"%b%b\x00%b" % (tx.sender, tx.kind.encode(), tx.payload))
    if known.seen(digest):
        return VerifiedTx(vtx.signed, p, embedded_checked=True)
    reason = known.failed(digest)
    if reason is not None:
        raise MalformedTransaction(reason)
    try:
        match p:
            case Settle():
                _embedded_settle(p, chain_id, known)
            case Claim():
                _embedded_claim(p, vtx.sender, chain_id, known)
            case Lock():
                _embedded_lock(p, vtx.sender, chain_id, known)
            case Slash():
                _embedded_slash(p, chain_id, known)
            case Reserve():
                _embedded_reserve(p, vtx.sender, chain_id, known)
    except ProtocolError as exc:
        reason = short_reason(
            f"a {tx.kind} must carry the signed messages its rule names, as their signers "
            f"signed them; one it carries is invalid ({exc})"
        )
        known.remember_failed(digest, reason)
        raise MalformedTransaction(reason) from None
    except MalformedTransaction as exc:
        reason = short_reason(str(exc))
        known.remember_failed(digest, reason)
        raise MalformedTransaction(reason) from None
    known.remember(digest)
    return VerifiedTx(vtx.signed, p, embedded_checked=True)


def _embedded_settle(p: Settle, chain_id: str, known: VerifiedMessages) -> None:
    if len({x.provider for x in p.payouts}) != len(p.payouts):
        raise MalformedTransaction("settle lists a provider twice; merge its payouts")
    for i, x in enumerate(p.payouts):
        bid = known.decode(x.bid, chain_id, Bid)
        if bid.job_id != p.job_id or bid.provider != x.provider or bid.price != x.amount:
            raise MalformedTransaction(
                f"payout {i} does not carry its provider's Bid for this job at the paid "
                f"amount (its Bid asks {bid.price}); pay each provider its own Bid's price"
            )


def _embedded_claim(p: Claim, sender: bytes, chain_id: str, known: VerifiedMessages) -> None:
    award = known.decode(p.award, chain_id, Award)
    receipt = known.decode(p.receipt, chain_id, Receipt)
    if not (
        award.requester == receipt.requester
        and award.job_id == receipt.job_id == p.job_id
        and award.provider == receipt.provider == sender
        and award.replica == receipt.replica
        and protocol.key_hash(p.key) == receipt.key_hash
    ):
        raise MalformedTransaction(
            "a claim needs its requester's Award and Receipt for this job, this sender and "
            "one replica, and the key its receipt names"
        )


def _embedded_reserve(p: Reserve, sender: bytes, chain_id: str, known: VerifiedMessages) -> None:
    award = known.decode(p.award, chain_id, Award)
    if award.job_id != p.job_id or award.provider != sender or award.requester == sender:
        raise MalformedTransaction(
            "a reserve must carry the requester's signed Award of the job to its sender"
        )


def _embedded_lock(p: Lock, sender: bytes, chain_id: str, known: VerifiedMessages) -> None:
    spec = known.decode(p.spec, chain_id, JobSpec)
    if protocol.content_hash(p.spec) != p.job_id or spec.requester != sender:
        raise MalformedTransaction(
            "a lock must carry the sender's own signed JobSpec of the job it locks"
        )


def _embedded_slash(p: Slash, chain_id: str, known: VerifiedMessages) -> None:
    """The state-independent part of ``_evidence.check_evidence``."""
    results = [known.decode(ev, chain_id, Result) for ev in p.evidence]
    mine = [r for r in results if r.provider == p.offender]
    others = [r for r in results if r.provider != p.offender]
    if not mine or len({r.job_id for r in results}) != 1:
        raise MalformedTransaction(
            "slash evidence must be signed Results of one job, one of them the offender's"
        )
    why = not_outputs(results)
    if why:
        raise MalformedTransaction(why)
    if p.reason == "conflicting_results":
        a, b = results if len(results) == 2 else (results[0], results[0])
        same = a.output_commitment == b.output_commitment
        if len(results) != 2 or others or a.replica != b.replica or same:
            raise MalformedTransaction(
                "conflicting_results needs two Results of the offender for one replica "
                "with different outputs"
            )
    else:
        majority = {r.output_commitment for r in others}
        if (
            len({r.provider for r in others}) < MIN_MAJORITY
            or len(majority) != 1
            or any(r.output_commitment in majority for r in mine)
        ):
            raise MalformedTransaction(
                f"failed_verification needs the agreeing Results of at least {MIN_MAJORITY} "
                "other providers, which the offender's contradicts"
            )
