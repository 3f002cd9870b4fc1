"""Builders for signed ledger transactions.

Each function signs one transaction for ``chain_id`` with ``key`` (the sender) at sequence
number ``seq``, valid until block ``expiry_height``, paying ``fee``::

    from ledger import tx
    signed = tx.lock(key, chain_id, seq=3, expiry_height=h + 100,
                     job_id=job, amount=price * replicas, claim_height=h + 50,
                     escrow_expiry=h + 100, max_per_payee=price, max_payees=replicas,
                     spec=signed_spec.raw)
    submit(signed.raw)

The marketplace maps its effects onto these: lock escrow, reserve a provider's place,
settle, refund, claim with a receipt, attest, slash.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import nacl.signing

import protocol
from protocol import Signed, Transaction

from ._payloads import (
    KIND_OF,
    Attest,
    Claim,
    Lock,
    Mint,
    Payload,
    Payout,
    Refund,
    Reserve,
    Settle,
    Slash,
    Stake,
    Transfer,
    Unstake,
)

Key = nacl.signing.SigningKey


def make(
    key: Key, chain_id: str, seq: int, payload: Payload, *, expiry_height: int, fee: int = 0
) -> Signed[Transaction]:
    """Sign any payload as a transaction of its kind."""
    tx = Transaction(
        sender=bytes(key.verify_key),
        seq=seq,
        expiry_height=expiry_height,
        fee=fee,
        kind=KIND_OF[type(payload)],
        payload=protocol.pack(payload.wire()),
    )
    return protocol.sign(tx, key, chain_id)


def mint(
    key: Key, chain_id: str, seq: int, *, to: bytes, amount: int, expiry_height: int, fee: int = 0
) -> Signed[Transaction]:
    """A coordinator creates ``amount`` in ``to``'s balance."""
    return make(key, chain_id, seq, Mint(to, amount), expiry_height=expiry_height, fee=fee)


def transfer(
    key: Key, chain_id: str, seq: int, *, to: bytes, amount: int, expiry_height: int, fee: int = 0
) -> Signed[Transaction]:
    """Pay ``amount`` to ``to``."""
    return make(key, chain_id, seq, Transfer(to, amount), expiry_height=expiry_height, fee=fee)


def lock(
    key: Key,
    chain_id: str,
    seq: int,
    *,
    job_id: bytes,
    amount: int,
    claim_height: int,
    escrow_expiry: int,
    max_per_payee: int,
    max_payees: int,
    spec: bytes,
    expiry_height: int,
    fee: int = 0,
) -> Signed[Transaction]:
    """Escrow ``amount`` for ``job_id``: providers may claim in [claim_height, escrow_expiry),
    the owner may refund from ``escrow_expiry``; at most ``max_payees`` providers are paid,
    each at most ``max_per_payee``. ``spec`` is the job's signed JobSpec (wire bytes; the
    signer must be ``key``)."""
    payload = Lock(job_id, amount, claim_height, escrow_expiry, max_per_payee, max_payees, spec)
    return make(key, chain_id, seq, payload, expiry_height=expiry_height, fee=fee)


def settle(
    key: Key,
    chain_id: str,
    seq: int,
    *,
    job_id: bytes,
    payouts: Mapping[bytes, int],
    bids: Mapping[bytes, bytes],
    expiry_height: int,
    fee: int = 0,
) -> Signed[Transaction]:
    """The escrow owner pays ``{provider: amount}`` and takes back the rest; ``bids`` holds
    each paid provider's signed Bid for the job (wire bytes; the amount is its price)."""
    items = tuple(Payout(p, a, bids[p]) for p, a in sorted(payouts.items()))
    return make(key, chain_id, seq, Settle(job_id, items), expiry_height=expiry_height, fee=fee)


def claim(
    key: Key,
    chain_id: str,
    seq: int,
    *,
    job_id: bytes,
    award: bytes,
    receipt: bytes,
    expiry_height: int,
    fee: int = 0,
    unseal_key: bytes = b"",
) -> Signed[Transaction]:
    """The awarded provider claims its price with the requester's signed Award and Receipt
    (their wire bytes), revealing the ``unseal_key`` a sealed receipt names."""
    payload = Claim(job_id, award, receipt, unseal_key)
    return make(key, chain_id, seq, payload, expiry_height=expiry_height, fee=fee)


def refund(
    key: Key, chain_id: str, seq: int, *, job_id: bytes, expiry_height: int, fee: int = 0
) -> Signed[Transaction]:
    """The escrow owner takes back what is left after the escrow's expiry."""
    return make(key, chain_id, seq, Refund(job_id), expiry_height=expiry_height, fee=fee)


def stake(
    key: Key, chain_id: str, seq: int, *, amount: int, expiry_height: int, fee: int = 0
) -> Signed[Transaction]:
    """Move ``amount`` from balance to stake."""
    return make(key, chain_id, seq, Stake(amount), expiry_height=expiry_height, fee=fee)


def unstake(
    key: Key, chain_id: str, seq: int, *, amount: int, expiry_height: int, fee: int = 0
) -> Signed[Transaction]:
    """Start unbonding ``amount``; it returns to the balance after the genesis delay."""
    return make(key, chain_id, seq, Unstake(amount), expiry_height=expiry_height, fee=fee)


def slash(
    key: Key,
    chain_id: str,
    seq: int,
    *,
    offender: bytes,
    amount: int,
    reason: str,
    evidence: Sequence[bytes],
    expiry_height: int,
    fee: int = 0,
) -> Signed[Transaction]:
    """A coordinator burns ``amount`` of ``offender``'s stake; ``evidence`` are the
    offender's signed Results (wire bytes)."""
    payload = Slash(offender, amount, reason, tuple(evidence))
    return make(key, chain_id, seq, payload, expiry_height=expiry_height, fee=fee)


def attest(
    key: Key,
    chain_id: str,
    seq: int,
    *,
    job_id: bytes,
    subject: bytes,
    positive: bool,
    expiry_height: int,
    fee: int = 0,
) -> Signed[Transaction]:
    """A party of a settled job rates another party of it."""
    payload = Attest(job_id, subject, int(positive))
    return make(key, chain_id, seq, payload, expiry_height=expiry_height, fee=fee)


def reserve(
    key: Key,
    chain_id: str,
    seq: int,
    *,
    job_id: bytes,
    award: bytes,
    expiry_height: int,
    fee: int = 0,
) -> Signed[Transaction]:
    """An awarded provider reserves its place in the job's escrow (``award``: the
    requester's signed Award naming it, wire bytes)."""
    payload = Reserve(job_id, award)
    return make(key, chain_id, seq, payload, expiry_height=expiry_height, fee=fee)
