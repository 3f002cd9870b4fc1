"""Effects: what the state machines ask their driver to do.

A machine never does I/O. Each event handler returns a list of these small frozen records;
the driver (the daemon, the simulator, a test harness) carries them out in order: network
effects become messages, ledger effects become signed ledger transactions, ``RunJob`` becomes
a sandbox call, timers go into the driver's timer wheel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from protocol import Award, JobSpec, Receipt, Result, Signed, content_hash

from ._reasons import NoBidReport

# --- shared value types -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Output:
    """A job's output as the verifier sees it.

    ``data`` is the output's canonical bytes (what travels, sealed, from provider to
    requester); ``commitment`` is the sandbox's commitment over the output tensors, the
    value compared bit for bit within one ``determinism_class``.
    """

    data: bytes
    commitment: bytes
    determinism_class: str

    @property
    def hash(self) -> bytes:
        """The content hash of ``data`` (``Result.output_hash``)."""
        return content_hash(self.data)


@dataclass(frozen=True, slots=True)
class Payout:
    """One provider's share of a settlement, in micro-credits, with the provider's signed
    Bid for the job (its wire bytes; the ledger pays a payout only at its bid's price)."""

    provider: bytes
    amount: int
    bid: bytes = field(default=b"", compare=False, repr=False)


class TimerKind(StrEnum):
    """What a timer is for (specs/marketplace.md, "Model": timer keys)."""

    #: Requester: the bid window of the latest announcement ends.
    BIDS = "bids"
    #: Requester: a replica's heartbeat timeout, deadline or award resend is due.
    WATCH = "watch"
    #: Requester: the job's deadline.
    DEADLINE = "deadline"
    #: Provider: our bid expires.
    BID = "bid"
    #: Provider: the next heartbeat is due.
    HEARTBEAT = "heartbeat"
    #: Provider: resend an unacknowledged result.
    RESEND = "resend"


@dataclass(frozen=True, slots=True)
class TimerKey:
    """Names one timer of one machine. Setting a key that is already set moves it."""

    kind: TimerKind
    job_id: bytes
    replica: int = 0


# --- timers -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Call the machine's ``timer(key, now_ms)`` at ``at_ms`` (replaces a timer of that key)."""

    at_ms: int
    key: TimerKey


@dataclass(frozen=True, slots=True)
class CancelTimer:
    """Forget the timer of ``key`` if it is set."""

    key: TimerKey


# --- network ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``message.raw`` to the peer whose Ed25519 key is ``peer``."""

    peer: bytes
    message: Signed[Any]


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish ``message.raw`` on the pubsub topic ``topic`` (a capability class)."""

    topic: str
    message: Signed[Any]


@dataclass(frozen=True, slots=True)
class Deliver:
    """Send a signed result, and its sealed output bytes when ``output`` is not empty, to
    the requester ``peer``.

    ``output`` is already sealed under the result's one-time key
    (:func:`protocol.seal_output`; the result's ``output_hash`` is its hash). The driver
    also seals it for the requester in transit (:func:`scheduler.seal`) and sends it with
    ``result.raw``; the requester's driver opens that and hands both to
    ``Requester.receive(raw, now_ms, output=...)`` (``output=None`` for a result without
    bytes).
    """

    peer: bytes
    result: Signed[Result]
    output: bytes
    #: Sent again (no Receipt came yet): a driver sends resends within a budget of their
    #: own, so that they never hold up the messages of running work (review round 71, F1).
    resend: bool = False


@dataclass(frozen=True, slots=True)
class Misbehaved:
    """A peer sent something invalid or out of place; count it against the peer."""

    peer: bytes | None
    reason: str


# --- ledger -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LockEscrow:
    """Lock ``amount`` of the requester's credits for ``job_id`` (a ledger ``lock``).

    Receipt claims are accepted from ``claim_height`` until ``expiry_height``; each provider
    is paid at most ``max_per_payee`` and at most ``max_payees`` providers are paid.
    """

    job_id: bytes
    amount: int
    claim_height: int
    expiry_height: int
    max_per_payee: int
    max_payees: int
    #: The job's signed JobSpec (its wire bytes): the ledger binds the job id to its owner.
    spec: bytes


@dataclass(frozen=True, slots=True)
class ReservePlace:
    """Reserve our place in the job's escrow at our award's price (a ledger ``reserve``,
    with the requester's signed Award), as we take the award: with it on the ledger we
    hand over our output's key on the requester's Receipt alone, a block before a claim
    of ours could."""

    job_id: bytes
    award: Signed[Award]


@dataclass(frozen=True, slots=True)
class Settle:
    """Pay each payout from the job's escrow, return the rest to the requester, close it.

    With no payouts this cancels the escrow: everything goes back to the requester.
    """

    job_id: bytes
    payouts: tuple[Payout, ...]

    def as_dict(self) -> dict[bytes, int]:
        return {p.provider: p.amount for p in self.payouts}

    def bids(self) -> dict[bytes, bytes]:
        return {p.provider: p.bid for p in self.payouts}


@dataclass(frozen=True, slots=True)
class Refund:
    """Return what is left in the job's escrow to the requester and close it; the ledger
    accepts it from the escrow's expiry height on (before that, ``Settle`` with no payouts)."""

    job_id: bytes


@dataclass(frozen=True, slots=True)
class ClaimWithReceipt:
    """A provider's claim of its award price with the requester's receipt: at once with a
    sealed receipt (``key`` is the unseal key it names, published by the claim), or from
    the claim window with a plain one (``key`` empty)."""

    job_id: bytes
    award: Signed[Award]
    receipt: Signed[Receipt]
    key: bytes = b""


@dataclass(frozen=True, slots=True)
class Attest:
    """A reputation statement about ``subject`` by a party to the job, with evidence.
    ``report``: the requester asks for a slash (a known answer contradicted, or
    ``slash_outvoted``): a driver that cannot land the attestation (the ledger takes one
    only about a party the escrow paid) reports the evidence to a coordinator instead.
    Without it an unlanded attestation is dropped."""

    job_id: bytes
    subject: bytes
    positive: bool
    reason: str
    evidence: tuple[Signed[Result], ...]
    report: bool = False


@dataclass(frozen=True, slots=True)
class Slash:
    """Take stake from ``provider``: its signed result contradicts a known answer."""

    job_id: bytes
    provider: bytes
    reason: str
    evidence: tuple[Signed[Result], ...]
    expected_commitment: bytes


# --- execution and the user ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunJob:
    """Fetch the job's model and inputs (verify their hashes), run it, then call
    ``Provider.job_finished``."""

    job: Signed[JobSpec]
    award: Signed[Award]


@dataclass(frozen=True, slots=True)
class AbortJob:
    """Stop the sandbox run of ``job_id`` if it is still running (the award is void)."""

    job_id: bytes


class UserEvent(StrEnum):
    """The progress a machine reports with :class:`NotifyUser`."""

    # The requester's.
    SUBMITTED = "submitted"
    SPOT_CHECK = "spot_check"
    ANNOUNCED = "announced"
    LOCKED = "locked"
    AWARDED = "awarded"
    DELIVERED = "delivered"
    REPLICA_FAILED = "replica_failed"
    #: Fewer replicas than the job needs are running and no bid is left to award.
    WAITING = "waiting"
    ESCROW_CLOSED = "escrow_closed"
    # The provider's.
    RECEIPTED = "receipted"
    UNACKNOWLEDGED = "unacknowledged"
    CLAIMED = "claimed"
    PAID = "paid"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class NotifyUser:
    """Progress for the person or program that submitted the job."""

    job_id: bytes
    event: UserEvent
    detail: str


class JobStatus(StrEnum):
    """How a job ended for its submitter (:class:`JobDone`)."""

    #: A majority, or the known answer, agreed.
    VERIFIED = "verified"
    #: The deadline came first; the results that arrived agreed but were too few.
    UNVERIFIED = "unverified"
    #: No usable result (the reason says why).
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class JobDone:
    """The job's final outcome for its submitter: its ``status``, and ``reason`` why
    (``no_bids`` carries the providers' reasons when nobody bid)."""

    job_id: bytes
    status: JobStatus
    reason: str
    output: Output | None
    paid: tuple[Payout, ...]
    no_bids: NoBidReport | None


Effect = (
    SetTimer
    | CancelTimer
    | Send
    | Publish
    | Deliver
    | Misbehaved
    | LockEscrow
    | ReservePlace
    | Settle
    | Refund
    | ClaimWithReceipt
    | Attest
    | Slash
    | RunJob
    | AbortJob
    | NotifyUser
    | JobDone
)
