"""The labelled verification cache (a scenario's ``verify_cache = true``).

Within the ``with`` block, an Ed25519 signature check whose exact bytes (signed message and
key) passed before is answered from a cache instead of being computed again: the same
JobSpec reaching many providers, or a transaction checked by the mempool and again by a
replica. Signatures are still made and checked for real the first time; a failing check is
never cached. Off by default; a run's summary says whether it was on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import protocol._envelope as _envelope
from protocol import content_hash

#: Entries kept before the cache starts over.
MAX_ENTRIES = 1 << 20


class _Bindings:
    """``nacl.bindings`` with a caching ``crypto_sign_open``."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self._ok: set[bytes] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def crypto_sign_open(self, signed: bytes, public_key: bytes) -> bytes:
        key = content_hash(public_key + signed)
        if key in self._ok:
            return signed[64:]
        out: bytes = self._real.crypto_sign_open(signed, public_key)
        if len(self._ok) >= MAX_ENTRIES:
            self._ok.clear()
        self._ok.add(key)
        return out


class _Nacl:
    def __init__(self, real: Any) -> None:
        self.bindings = _Bindings(real.bindings)
        self.exceptions = real.exceptions
        self.signing = real.signing


@contextmanager
def verification_cache(enabled: bool) -> Iterator[None]:
    """Cache successful signature checks while the block runs (nothing when disabled)."""
    if not enabled:
        yield
        return
    real = getattr(_envelope, "nacl")  # noqa: B009 - the module's own name for nacl
    setattr(_envelope, "nacl", _Nacl(real))  # noqa: B010
    try:
        yield
    finally:
        setattr(_envelope, "nacl", real)  # noqa: B010
