"""The body of each transaction kind.

A :class:`protocol.Transaction` carries ``kind`` (one of :data:`KINDS`) and ``payload``, the
canonical msgpack of the kind's record below. Field order is the wire order; the validity
rules are in ``_rules.py`` and specs/ledger.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from protocol import Bin, ListOf, Nested, Record, Text, UInt

Key = Bin(32)
Hash = Bin(32)
Amount = UInt(min=1, max=(1 << 62))

#: Largest signed Award or Receipt accepted as claim evidence.
MAX_EVIDENCE_ITEM = 4096
#: Largest signed JobSpec a lock carries.
MAX_SPEC_BYTES = 16 * 1024
#: Most payees of one escrow.
MAX_PAYEES = 64
#: Reasons a coordinator may slash for.
SLASH_REASONS = ("conflicting_results", "failed_verification")


@dataclass(frozen=True, slots=True)
class Mint(Record):
    """Create ``amount`` credits in ``to``'s balance. Coordinators only."""

    to: Annotated[bytes, Key]
    amount: Annotated[int, Amount]


@dataclass(frozen=True, slots=True)
class Transfer(Record):
    """Move ``amount`` from the sender's balance to ``to``'s."""

    to: Annotated[bytes, Key]
    amount: Annotated[int, Amount]


@dataclass(frozen=True, slots=True)
class Lock(Record):
    """Escrow ``amount`` for job ``job_id``.

    Providers may claim with a receipt from ``claim_height`` on and before
    ``expiry_height``; the owner may refund what is left from ``expiry_height`` on. At most
    ``max_payees`` distinct providers are paid, each at most ``max_per_payee`` in total.
    ``spec`` is the job's signed :class:`protocol.JobSpec` (its wire bytes): its id must be
    ``job_id`` and its requester the sender, so a job id can only be locked by its owner.
    """

    job_id: Annotated[bytes, Hash]
    amount: Annotated[int, Amount]
    claim_height: Annotated[int, UInt()]
    expiry_height: Annotated[int, UInt()]
    max_per_payee: Annotated[int, Amount]
    max_payees: Annotated[int, UInt(min=1, max=MAX_PAYEES)]
    spec: Annotated[bytes, Bin(max=MAX_SPEC_BYTES)]


@dataclass(frozen=True, slots=True)
class Payout(Record):
    """One payment out of an escrow: ``amount`` is the price of ``bid``, the provider's own
    signed :class:`protocol.Bid` for the job (its wire bytes), so nobody is paid, or gains
    reputation, from a job it never offered to run."""

    provider: Annotated[bytes, Key]
    amount: Annotated[int, Amount]
    bid: Annotated[bytes, Bin(max=MAX_EVIDENCE_ITEM)]


@dataclass(frozen=True, slots=True)
class Settle(Record):
    """The escrow owner pays providers and takes back the rest; closes the escrow."""

    job_id: Annotated[bytes, Hash]
    payouts: Annotated[tuple[Payout, ...], ListOf(Nested(Payout), max=MAX_PAYEES)]


@dataclass(frozen=True, slots=True)
class Claim(Record):
    """An awarded provider claims its price from an escrow with the requester's receipt.

    ``award`` and ``receipt`` are the signed wire bytes of the requester's
    :class:`protocol.Award` and :class:`protocol.Receipt` for this job and provider;
    ``key`` is the one-time key the receipt names: the claim publishes what opens the
    output bytes the requester already holds.
    """

    job_id: Annotated[bytes, Hash]
    award: Annotated[bytes, Bin(max=MAX_EVIDENCE_ITEM)]
    receipt: Annotated[bytes, Bin(max=MAX_EVIDENCE_ITEM)]
    key: Annotated[bytes, Bin(max=32)] = b""


@dataclass(frozen=True, slots=True)
class Reserve(Record):
    """An awarded provider reserves its place in the job's escrow, at its award's price,
    with the requester's signed :class:`protocol.Award` (its wire bytes). Sent as it takes
    the award: it is then paid that price only, and the price stays in the escrow until
    it is paid or the escrow expires, whatever the owner settles meanwhile. What lets it
    hand over its output's key on the Receipt alone (specs/marketplace.md)."""

    job_id: Annotated[bytes, Hash]
    award: Annotated[bytes, Bin(max=MAX_EVIDENCE_ITEM)]


@dataclass(frozen=True, slots=True)
class Refund(Record):
    """The escrow owner takes back what is left after expiry; closes the escrow."""

    job_id: Annotated[bytes, Hash]


@dataclass(frozen=True, slots=True)
class Stake(Record):
    """Move ``amount`` from balance to stake."""

    amount: Annotated[int, Amount]


@dataclass(frozen=True, slots=True)
class Unstake(Record):
    """Start unbonding ``amount`` of stake; it returns to the balance after the delay."""

    amount: Annotated[int, Amount]


@dataclass(frozen=True, slots=True)
class Slash(Record):
    """A coordinator burns ``amount`` of ``offender``'s stake, with signed evidence."""

    offender: Annotated[bytes, Key]
    amount: Annotated[int, Amount]
    reason: Annotated[str, Text(choices=SLASH_REASONS)]
    evidence: Annotated[tuple[bytes, ...], ListOf(Bin(max=MAX_EVIDENCE_ITEM), max=4)]


@dataclass(frozen=True, slots=True)
class Attest(Record):
    """A party of a settled job rates another party of it (``positive`` is 1 or 0)."""

    job_id: Annotated[bytes, Hash]
    subject: Annotated[bytes, Key]
    positive: Annotated[int, UInt(max=1)]


Payload = (
    Mint | Transfer | Lock | Settle | Claim | Refund | Stake | Unstake | Slash | Attest | Reserve
)

#: Transaction kind name -> payload record.
KINDS: dict[str, type[Payload]] = {
    "mint": Mint,
    "transfer": Transfer,
    "lock": Lock,
    "settle": Settle,
    "claim": Claim,
    "refund": Refund,
    "stake": Stake,
    "unstake": Unstake,
    "slash": Slash,
    "attest": Attest,
    "reserve": Reserve,
}
KIND_OF: dict[type[Payload], str] = {cls: name for name, cls in KINDS.items()}


#: The kinds only a genesis coordinator may send. They owe no ``min_fee``: the fee is
#: spam's price, and a coordinator (which collects no fees and may hold nothing) could
#: otherwise not mint on a chain that asks for one.
COORDINATOR_KINDS: tuple[type[Record], ...] = (Mint, Slash)
