"""Round 40, F3: a 5-byte ``blocks/1`` request had up to 256 blocks (2.8 MiB) sent, and
requests one after another on one stream were answered as fast as they came (2,000 in
1.6 s): nothing bounded the bytes one peer was sent. A peer now has a bucket of answer
bytes (32 MiB, refilled at 8 MiB a second); past it its answers wait."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import protocol
from node.ledger._serve import ANSWER_BYTES_BURST, ANSWER_BYTES_PER_S
from node.ledger._wire import BLOCKS_PROTOCOL

from ...keys import pub
from ...ledger.helpers import COORD
from .test_peer_input import _coordinator_replica_and_mallory
from .test_peer_input import clock as clock  # the autojump clock fixture

ANSWER = 3 << 20  # about what a chain of full blocks gives a request


async def test_one_peers_block_answers_are_paced_past_its_bucket(
    clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _coordinator_replica_and_mallory(seed=3, sync_ms=500) as (
        coord,
        replica,
        evil,
        nursery,
    ):
        big = protocol.pack([0, [b"b" * (ANSWER - 64)]])

        async def answer(start: int, limit: int) -> bytes:
            return big

        monkeypatch.setattr(coord.server, "_blocks_response", answer)
        request = protocol.pack([1, 256])
        target = pub(COORD)
        started = trio.current_time()
        n = 30
        for _ in range(n):
            data = await evil.request(target, BLOCKS_PROTOCOL, request, timeout=10)
            assert len(data) == len(big)
        elapsed = trio.current_time() - started
        # the burst at once, the rest at the bucket's rate (it went as fast as it asked)
        expected = (n * len(big) - ANSWER_BYTES_BURST) / ANSWER_BYTES_PER_S
        assert elapsed >= 0.9 * expected, elapsed
        # another peer's answers are not held up by Mallory's debt
        started = trio.current_time()
        await replica.net.request(target, BLOCKS_PROTOCOL, request, timeout=10)
        assert trio.current_time() - started < 0.1
        nursery.cancel_scope.cancel()


def test_a_full_table_of_answer_buckets_drops_the_longest_untouched_not_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Round 41, F3: a new peer past the table's size cleared every bucket, debts
    included; now the bucket least recently used goes."""
    from node.ledger import _serve

    monkeypatch.setattr(_serve, "MAX_PEERS_TRACKED", 3)
    server = _serve.Server(None)  # type: ignore[arg-type]
    for peer in (b"a", b"b", b"c"):
        server._answered(peer, ANSWER_BYTES_BURST * 2, now=0.0)  # each a burst in debt
    server._answered(b"a", 0, now=0.0)  # used again: the last to go
    server._answered(b"d", 0, now=0.0)
    assert set(server._answers) == {b"a", b"c", b"d"}
    assert server._answer_pause(b"c", now=0.0) > 0  # its debt kept


async def test_block_reads_on_the_store_thread_are_bounded_node_wide(
    clock: trio.testing.MockClock,
) -> None:
    """Round 74, R74-B: the store's one thread takes its calls in order, and a node's
    commits waited behind up to 256 block answers, new keys each with a fresh allowance."""
    from types import SimpleNamespace

    from node.ledger import _serve

    reading = [0, 0]  # now, most

    async def call(fn: object) -> list[bytes]:
        reading[0] += 1
        reading[1] = max(reading[1], reading[0])
        await trio.sleep(0.1)
        reading[0] -= 1
        return [b"block"]

    service = SimpleNamespace(state=SimpleNamespace(height=10), store=SimpleNamespace(call=call))
    server = _serve.Server(service)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        for _ in range(100):
            nursery.start_soon(server._blocks_response, 1, 256)
    assert reading[1] == _serve.MAX_BLOCK_READS
