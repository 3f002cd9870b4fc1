"""Token buckets, on a clock the test gives."""

from __future__ import annotations

import pytest

from node._token_bucket import TokenBucket


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


def test_a_burst_smaller_than_a_minute_refills_at_the_rate() -> None:
    bucket = TokenBucket(1200, now_ms=0, burst=2)  # 20 a second, 2 at once
    bucket.take(0)
    bucket.take(0)
    assert bucket.wait_ms(0) == 50
    assert bucket.level(10**9) == 2
    with pytest.raises(ValueError):
        TokenBucket(60, now_ms=0, burst=0)
