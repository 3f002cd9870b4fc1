"""A token bucket with no clock of its own: every call takes ``now_ms`` (the caller's
clock), so a test drives it in virtual time. Used for the faucet's limits
(``node/api/_ratelimit.py``) and the pace of peers' DHT messages
(``node/net/_libp2p_dht.py``)."""

from __future__ import annotations

import math

MINUTE_MS = 60_000


class TokenBucket:
    """Up to ``burst`` takes at once (``per_minute`` if not given), refilled at
    ``per_minute`` a minute."""

    def __init__(self, per_minute: int, now_ms: int, *, burst: int | None = None) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        if burst is not None and burst < 1:
            raise ValueError("burst must be at least 1")
        self.capacity = float(per_minute if burst is None else burst)
        self._per_ms = per_minute / MINUTE_MS
        self._tokens = self.capacity
        self._at_ms = now_ms

    def level(self, now_ms: int) -> float:
        elapsed = max(0, now_ms - self._at_ms)  # a clock going back refills nothing
        return min(self.capacity, self._tokens + elapsed * self._per_ms)

    def wait_ms(self, now_ms: int) -> int:
        """0 when a take is allowed now, else how long until it is."""
        missing = 1.0 - self.level(now_ms)
        return 0 if missing <= 0 else math.ceil(missing / self._per_ms)

    def take(self, now_ms: int) -> None:
        self._tokens = self.level(now_ms) - 1.0
        self._at_ms = max(self._at_ms, now_ms)
