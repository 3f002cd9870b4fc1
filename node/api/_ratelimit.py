"""The faucet's rate limits (specs/api.md, "POST /api/faucet"): token buckets
(:class:`~node._token_bucket.TokenBucket`) on the node's clock."""

from __future__ import annotations

from collections.abc import Hashable

from .._token_bucket import TokenBucket

__all__ = ["FaucetLimits", "TokenBucket"]


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
