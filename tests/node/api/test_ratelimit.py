"""The faucet's token buckets, on a clock the test gives."""

from __future__ import annotations

import pytest

from node.api._ratelimit import FaucetLimits, TokenBucket


def test_a_bucket_allows_a_burst_then_refills_with_time() -> None:
    bucket = TokenBucket(3, now_ms=0)
    for _ in range(3):
        assert bucket.wait_ms(0) == 0
        bucket.take(0)
    assert bucket.wait_ms(0) == 20_000  # 3 a minute: one every 20 s
    assert bucket.wait_ms(19_999) == 1
    assert bucket.wait_ms(20_000) == 0
    bucket.take(20_000)
    assert bucket.level(10**9) == 3  # never more than its capacity
    with pytest.raises(ValueError):
        TokenBucket(0, now_ms=0)


def test_a_clock_going_back_refills_nothing() -> None:
    bucket = TokenBucket(1, now_ms=100_000)
    bucket.take(100_000)
    assert bucket.wait_ms(0) == 60_000
    assert bucket.wait_ms(159_999) == 1
    assert bucket.wait_ms(160_000) == 0


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
