"""Checking capability records: our own before advertising (and renewing), peers' before
returning them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import protocol
from protocol import Advert, Signed

from ._errors import RecordError
from ._interface import RenewRecord


def check_own_record(record: Signed[Any], local_peer: bytes, chain_id: str, now_ms: int) -> None:
    """Raise :class:`RecordError` unless ``record`` is an unexpired Advert this node signed."""
    if not isinstance(record, Signed) or not isinstance(record.message, Advert):
        raise RecordError("advertise takes a protocol.Signed[protocol.Advert]")
    if record.signer != local_peer:
        raise RecordError("the record must be signed with this node's key")
    if record.chain_id != chain_id:
        raise RecordError(f"the record is for chain {record.chain_id!r}, not {chain_id!r}")
    if not record.message.capability_classes:
        raise RecordError("the record names no capability class: nothing to advertise")
    if record.message.expires_ms <= now_ms:
        raise RecordError("the record has expired: sign a new one with a later expires_ms")


def renewed_record(
    renew: RenewRecord,
    local_peer: bytes,
    chain_id: str,
    now_ms: Callable[[], int],
    log: logging.Logger,
) -> Signed[Advert] | None:
    """The successor of our advertised record from ``renew``, checked as our own; None
    (and logged) if ``renew`` fails or returns a record we may not advertise."""
    try:
        new = renew()
        check_own_record(new, local_peer, chain_id, now_ms())
    except (RecordError, protocol.ProtocolError) as exc:
        log.error("could not renew the capability record: %s", exc)
        return None
    return new


def verify_record(
    raw: bytes, chain_id: str, capability_class: str | None, now_ms: int
) -> Signed[Advert] | None:
    """The decoded record if it verifies, is unexpired and (if given) serves the class."""
    try:
        signed: Signed[Advert] = protocol.decode(raw, chain_id, Advert)
    except protocol.ProtocolError:
        return None
    advert = signed.message
    if advert.expires_ms <= now_ms:
        return None
    if capability_class is not None and capability_class not in advert.capability_classes:
        return None
    return signed


def best_per_peer(records: list[Signed[Advert]], limit: int) -> list[Signed[Advert]]:
    """One record per peer, the highest ``seq`` (ties: latest issued), at most ``limit``,
    in a stable order (by peer key)."""
    best: dict[bytes, Signed[Advert]] = {}
    for rec in records:
        old = best.get(rec.signer)
        key = (rec.message.seq, rec.message.issued_ms)
        if old is None or key > (old.message.seq, old.message.issued_ms):
            best[rec.signer] = rec
    return [best[k] for k in sorted(best)][: max(0, limit)]
