"""What the machines read of the ledger: a job's escrow, as the latest block left it.

The machines do not depend on the ledger package; a driver passes a lookup whose escrows
have this shape (``ledger.Escrow`` has it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from protocol import JobSpec


class EscrowView(Protocol):
    """A job's escrow on the ledger."""

    @property
    def owner(self) -> bytes:
        """The account that locked it."""
        ...

    @property
    def locked(self) -> int:
        """The amount locked."""
        ...

    @property
    def remaining(self) -> int:
        """What is left to pay out."""
        ...

    @property
    def claim_height(self) -> int:
        """Claims with a plain receipt are accepted from this height on."""
        ...

    @property
    def expiry_height(self) -> int:
        """Claims end, and the owner may refund the rest, at this height."""
        ...

    @property
    def max_per_payee(self) -> int:
        """The most one provider may be paid."""
        ...

    @property
    def max_payees(self) -> int:
        """The most providers that may be paid."""
        ...

    @property
    def is_open(self) -> bool:
        """Neither settled nor refunded yet."""
        ...

    def paid_to(self, provider: bytes) -> int:
        """What the escrow has paid ``provider`` so far."""
        ...

    @property
    def places(self) -> frozenset[bytes]:
        """The providers holding a place in the escrow: paid, or with one reserved."""
        ...

    def reserved_for(self, provider: bytes) -> int:
        """The price the owner reserved in the escrow for ``provider`` (0 if none): it is
        paid that, and the price stays in the escrow until it is paid or the escrow
        expires, whatever the owner settles."""
        ...

    def claimable_by(self, provider: bytes) -> bool:
        """Whether a claim of ``provider``'s can still apply: the escrow is open, or it
        was settled and still holds ``provider``'s reserved price."""
        ...

    def unsealed_by(self, provider: bytes) -> bytes:
        """The unseal key ``provider``'s claim published (``b""`` if none): it opens the
        sealed output bytes it sent with its result."""
        ...


EscrowLookup = Callable[[bytes], EscrowView | None]
"""The escrow locked for a job id, or ``None`` if there is none (yet)."""


def no_escrow(job_id: bytes) -> EscrowView | None:
    """A lookup that knows no escrow (a provider with it never sends output bytes)."""
    return None


def uncovered(escrow: EscrowView, spec: JobSpec, price: int, claim_window_blocks: int) -> str:
    """Why ``escrow`` cannot pay an award of ``price`` for ``spec`` by claim ("" when it
    can): it must be the requester's, expire when the job says, open claims no later than
    the claim window, and have room for the price and for the job's redundancy, every
    payee it may pay at its most."""
    if escrow.owner != spec.requester:
        return "is not the requester's"
    if escrow.expiry_height != spec.escrow_expiry_height:
        return f"expires at {escrow.expiry_height}, not the job's {spec.escrow_expiry_height}"
    if escrow.claim_height > escrow.expiry_height - claim_window_blocks:
        return f"opens claims at {escrow.claim_height}, after the claim window"
    if escrow.max_payees < spec.redundancy:
        return f"pays at most {escrow.max_payees} providers, under the job's redundancy"
    if escrow.locked < escrow.max_payees * escrow.max_per_payee:
        # Then no claim with a receipt is refused for funds while a payee place is left
        # (each payee is paid at most max_per_payee). One price locked for a redundancy-3
        # job paid the first winner's claim and refused the other two (review round 16,
        # R16B-2); an honest lock is max_price times a budget of at least max_payees.
        return (
            f"holds {escrow.locked}, less than its {escrow.max_payees} payees at "
            f"{escrow.max_per_payee} each"
        )
    if min(escrow.max_per_payee, escrow.remaining) < price:
        return f"cannot pay the award's {price}"
    return ""
