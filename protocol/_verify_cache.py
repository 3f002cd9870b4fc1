"""A cache of Ed25519 checks known to pass: a daemon's (``aimx node run``), and the
simulator's labelled one (a scenario's ``verify_cache = true``).

Within the ``with`` block, an Ed25519 check of exact bytes (signature, signed message and
key) that is known to pass is answered from a cache instead of being computed again. Known
to pass means one of two things:

- the check passed before (the same JobSpec reaching many providers, a Result checked by
  the requester and again inside a settlement);
- this process made that signature itself, over those bytes, with the secret key whose
  public half is that key (``protocol.sign`` calls ``crypto_sign`` with the key's own
  ``seed || public key``, and a signature made with the matching secret key always
  verifies): the recipient's check of a message as it was sent.

In both cases the cache gives the answer the real check would give; any other bytes
(another signature, a changed body, another key) are checked for real, and a failing check
is never cached. Every signature is still made for real.

In the simulator, where every node is in one process, most messages are checked exactly
once, by their one recipient, so a cache of repeated checks alone answered only about a
third of them; with signing counted it answers nearly all. It is off by default there, and
a run's summary says whether it was on (the CPU it saves is not the network's). A daemon
keeps one (smaller) for its life: a replica checks again the Bids, Award and Receipt inside
settles and claims that its market checked, and a node its own transactions in blocks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import _envelope

#: Entries kept per generation: when the newer one is full, the older one is dropped. A
#: message is checked soon after it is signed, so two generations cover far more virtual
#: time than a message spends in flight. A daemon's is smaller (about 3 MB in all).
GENERATION = 1 << 19
DAEMON_GENERATION = 1 << 14

_blake2b = hashlib.blake2b


class _Bindings:
    """``nacl.bindings`` with a recording ``crypto_sign`` and a caching
    ``crypto_sign_open``."""

    def __init__(self, real: Any, generation: int) -> None:
        self._real = real
        self._generation = generation
        self._sign = real.crypto_sign
        self._open = real.crypto_sign_open
        self._ok: set[bytes] = set()
        self._old: set[bytes] = set()
        self.hits = 0
        self.checks = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def _add(self, key: bytes) -> None:
        ok = self._ok
        if len(ok) >= self._generation:
            self._old = ok
            ok = self._ok = set()
        ok.add(key)

    def crypto_sign(self, message: bytes, secret_key: bytes) -> bytes:
        signed: bytes = self._sign(message, secret_key)
        # libsodium's 64-byte secret key is seed || public key
        self._add(_blake2b(secret_key[32:] + signed, digest_size=32).digest())
        return signed

    def crypto_sign_open(self, signed: bytes, public_key: bytes) -> bytes:
        key = _blake2b(public_key + signed, digest_size=32).digest()
        if key in self._ok or key in self._old:
            self.hits += 1
            return signed[64:]
        self.checks += 1
        out: bytes = self._open(signed, public_key)
        self._add(key)
        return out


class _Nacl:
    def __init__(self, real: Any, generation: int) -> None:
        self.bindings = _Bindings(real.bindings, generation)
        self.exceptions = real.exceptions
        self.signing = real.signing


@contextmanager
def verification_cache(enabled: bool, generation: int | None = None) -> Iterator[_Bindings | None]:
    """Cache signature checks known to pass while the block runs (nothing when disabled),
    ``generation`` entries a generation (:data:`GENERATION` if not given).

    Yields the cache (its ``hits`` and real ``checks`` counted), or ``None`` when disabled.
    """
    if not enabled:
        yield None
        return
    real = getattr(_envelope, "nacl")  # noqa: B009 - the module's own name for nacl
    cached = _Nacl(real, GENERATION if generation is None else generation)
    setattr(_envelope, "nacl", cached)  # noqa: B010
    try:
        yield cached.bindings
    finally:
        setattr(_envelope, "nacl", real)  # noqa: B010
