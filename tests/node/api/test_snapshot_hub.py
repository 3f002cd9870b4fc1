"""The dashboard's live updates (node/api/_snapshot_hub.py): one snapshot per tick for
every listener, none while nobody listens, keepalives, and a failing snapshot."""

from __future__ import annotations

import itertools
import json

import trio
import trio.testing

from node.api._snapshot_hub import SnapshotHub


async def test_no_snapshot_is_computed_while_nobody_listens_and_one_per_tick_for_all(
    autojump_clock: trio.testing.MockClock,
) -> None:
    computed: list[float] = []

    async def compute() -> bytes:
        computed.append(trio.current_time())
        return json.dumps({"n": len(computed)}).encode()

    hub = SnapshotHub(compute, tick_s=1.0, max_listeners=2)
    await trio.sleep(30)
    assert computed == []  # nobody listened
    got: dict[int, list[bytes]] = {0: [], 1: [], 2: []}

    async def listen(i: int, events: int) -> None:
        stream = hub.stream()
        async for chunk in stream:
            got[i].append(chunk)
            if len(got[i]) == events:
                break
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listen, 0, 11)  # the retry line and 10 snapshots
        nursery.start_soon(listen, 1, 11)
        await trio.sleep(0.1)
        nursery.start_soon(listen, 2, 1)  # a third is over the bound
    assert got[2] == [b"event: full\ndata: {}\n\n"]
    assert got[0] == got[1]  # the same snapshots, computed once for both
    assert len(computed) == 10
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(computed))
    assert hub.listeners == 0
    await trio.sleep(60)
    assert len(computed) == 10  # they left: nothing more


async def test_an_unchanged_snapshot_is_sent_once_then_kept_alive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def compute() -> bytes:
        return b"{}"

    hub = SnapshotHub(compute, tick_s=1.0)
    chunks: list[bytes] = []
    with trio.move_on_after(31.5):
        async for chunk in hub.stream():
            chunks.append(chunk)
    assert (
        chunks == [b"retry: 2000\n\n", b"event: snapshot\ndata: {}\n\n"] + [b": keepalive\n\n"] * 2
    )


async def test_a_failing_snapshot_is_an_error_event_and_the_stream_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls = [0]

    async def compute() -> bytes:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("a bug")
        return b'{"ok":1}'

    events = []
    async for chunk in SnapshotHub(compute).stream():
        events.append(chunk)
        if len(events) == 3:
            break
    assert events[1].startswith(b'event: snapshot\ndata: {"error":"the snapshot failed')
    assert events[2] == b'event: snapshot\ndata: {"ok":1}\n\n'
