"""Small pieces the ledger's rules share (``_rules.py``, ``_payout_rules.py``): a rule's
commit, account updates, and the escrow look-ups every escrow rule starts with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._draft import Draft
from ._errors import EscrowError, InsufficientFunds, NotAuthorized
from ._state import Account, Escrow

#: What applies a checked payload to the draft (a rule returns one, or raises).
Commit = Callable[[], None]


def with_(
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


def credit(draft: Draft, account: bytes, amount: int) -> None:
    a = draft.account(account)
    draft.put(account, with_(a, balance=a.balance + amount))


def debit(draft: Draft, account: bytes, amount: int) -> None:
    a = draft.account(account)
    assert a.balance >= amount, "checked before commit"
    draft.put(account, with_(a, balance=a.balance - amount))


def require_spendable(spendable: int, amount: int, what: str) -> None:
    if amount > spendable:
        raise InsufficientFunds(f"balance after fee is {spendable}, cannot {what} {amount}")


def require_coordinator(draft: Draft, sender: bytes, what: str) -> None:
    if sender not in draft.genesis.coordinators:
        raise NotAuthorized(f"only a coordinator listed in the genesis may {what}")


def escrow_of(draft: Draft, job_id: bytes) -> Escrow:
    e = draft.escrow(job_id)
    if e is None:
        raise EscrowError(f"no escrow is locked for job {job_id.hex()}")
    return e


def require_open(e: Escrow, job_id: bytes) -> None:
    if not e.is_open:
        raise EscrowError(f"escrow of job {job_id.hex()} is already closed")


def owned_open_escrow(draft: Draft, sender: bytes, job_id: bytes, what: str) -> Escrow:
    """The job's escrow, which ``sender`` must own and which must still be open."""
    e = escrow_of(draft, job_id)
    if e.owner != sender:
        raise NotAuthorized(f"only the escrow's owner may {what} it")
    require_open(e, job_id)
    return e


def paid_with(paid: tuple[tuple[bytes, int], ...], more: dict[bytes, int]) -> dict[bytes, int]:
    out = dict(paid)
    for p, a in more.items():
        out[p] = out.get(p, 0) + a
    return out


def replace_escrow(e: Escrow, **changes: Any) -> Escrow:
    values = {s: getattr(e, s) for s in Escrow.__slots__}
    values.update(changes)
    return Escrow(**values)
