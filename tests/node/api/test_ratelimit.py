"""The faucet's limits, on a clock the test gives."""

from __future__ import annotations

from node.api._ratelimit import FaucetLimits


def test_limits_per_account_and_per_node() -> None:
    limits = FaucetLimits(node_per_minute=3, account_per_minute=1)
    for account in (b"a", b"b"):
        assert limits.wait_ms(account, 0) == 0
        limits.take(account, 0)
    assert limits.wait_ms(b"a", 0) == 60_000  # per account
    limits.take(b"c", 0)
    assert limits.wait_ms(b"d", 0) == 20_000  # per node: 3 used, one back every 20 s
    assert limits.wait_ms(b"d", 20_000) == 0


def test_buckets_are_kept_for_a_bounded_number_of_accounts() -> None:
    limits = FaucetLimits(node_per_minute=100, account_per_minute=1, max_accounts=2)
    for account in (b"a", b"b", b"c"):
        limits.take(account, 0)
    assert limits.wait_ms(b"c", 0) > 0 and limits.wait_ms(b"b", 0) > 0
    assert limits.wait_ms(b"a", 0) == 0  # the oldest was forgotten (the node's limit holds)
