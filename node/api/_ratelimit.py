"""Token buckets for the faucet's rate limits (specs/api.md, "POST /api/faucet").

No clock of their own: every call takes ``now_ms`` (the node's clock), so a test drives
them in virtual time.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

MINUTE_MS = 60_000


class TokenBucket:
    """Up to ``per_minute`` takes at once, refilled at ``per_minute`` a minute."""

    def __init__(self, per_minute: int, now_ms: int) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.capacity = float(per_minute)
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


class FaucetLimits:
    """At most ``node_per_minute`` mints a minute in all and ``account_per_minute`` to any
    one account; buckets for at most ``max_accounts`` accounts (the oldest is forgotten)."""

    def __init__(
        self, node_per_minute: int, account_per_minute: int, *, max_accounts: int = 10_000
    ) -> None:
        self.node_per_minute = node_per_minute
        self.account_per_minute = account_per_minute
        self.max_accounts = max_accounts
        self._node: TokenBucket | None = None
        self._accounts: dict[Hashable, TokenBucket] = {}

    def _buckets(self, account: Hashable, now_ms: int) -> tuple[TokenBucket, TokenBucket]:
        if self._node is None:
            self._node = TokenBucket(self.node_per_minute, now_ms)
        bucket = self._accounts.get(account)
        if bucket is None:
            while len(self._accounts) >= self.max_accounts:
                del self._accounts[next(iter(self._accounts))]
            bucket = self._accounts[account] = TokenBucket(self.account_per_minute, now_ms)
        return self._node, bucket

    def wait_ms(self, account: Hashable, now_ms: int) -> int:
        """0 when a mint to ``account`` is allowed now, else how long until it is."""
        node, mine = self._buckets(account, now_ms)
        return max(node.wait_ms(now_ms), mine.wait_ms(now_ms))

    def take(self, account: Hashable, now_ms: int) -> None:
        """Count a mint to ``account`` (after :meth:`wait_ms` said 0)."""
        node, mine = self._buckets(account, now_ms)
        node.take(now_ms)
        mine.take(now_ms)
