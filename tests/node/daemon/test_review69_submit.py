"""Review round 69, R69-3: two submits at once on a requester whose provider lookup is
slow (a DHT lookup on a real network) both passed the balance check, made before the
lookup was awaited: the second was answered 201, announced, and its lock then failed.
The check is made again after the lookup."""

from __future__ import annotations

from typing import Any

import trio

from node.daemon import JobSubmitError
from sandbox import tiny_model_path

from ._cluster import FUNDS, cluster, tiny_inputs


async def test_two_submits_at_once_cannot_both_spend_the_same_balance() -> None:
    with trio.fail_after(60):
        async with cluster(0, runner=lambda i: None) as cl:
            node = cl.requester
            real = node.net.find_providers

            async def slow_find(*args: Any, **kw: Any) -> Any:
                await trio.sleep(1.0)
                return await real(*args, **kw)

            node.net.find_providers = slow_find  # type: ignore[method-assign]
            model = tiny_model_path().read_bytes()
            price = FUNDS // 5  # each escrow 3 × price: 60 % of the balance
            outcomes: list[str] = []

            async def one() -> None:
                try:
                    await node.submit_job(
                        model,
                        tiny_inputs(),
                        max_price=price,
                        redundancy=1,
                        max_retries=2,
                        deadline_ms=15_000,
                    )
                    outcomes.append("submitted")
                except JobSubmitError as exc:
                    assert "balance available" in str(exc)
                    outcomes.append("refused")

            async with trio.open_nursery() as n:
                n.start_soon(one)
                n.start_soon(one)
            assert sorted(outcomes) == ["refused", "submitted"]
            assert len(node.jobs) == 1
