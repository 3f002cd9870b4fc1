"""Review round 19, R19-3: inbound slots were shared by key alone, so one host's fresh keys
(each holding none, as a newcomer does) opening 50-200 DHT streams a second took most
slots that came free and filled the waiting line: an honest newcomer got 0-50 % of its
streams in. Slots are now shared by host first (the address of a direct connection), then
by key within a host (node/net/_fair_slots.py)."""

from __future__ import annotations

import trio

from node.net._fair_slots import MAX_WAITING, MAX_WAITING_PER_PEER, FairSlots

A, B = ("ip", "10.0.0.1"), ("ip", "10.0.0.2")


def _hold(slots: FairSlots, peer: bytes, host: object) -> None:
    held = slots.enter(peer, host)
    assert held is not None
    held.exchanging = True  # a DHT stream: its age decides


async def test_a_newcomer_takes_from_the_host_holding_more_never_from_a_smaller_one() -> None:
    slots = FairSlots(4, 4, stall_s=0.0, wait_s=0.0)
    for i in range(4):
        _hold(slots, b"a-%d" % i, A)  # one host, four keys, every slot
    assert slots.enter(b"b", B) is not None  # B holds none: it takes one of A's
    assert slots.held_by_group(A) == 3
    for i in range(4):  # A's fresh keys take from A's own keys: B's host holds fewer
        assert slots.enter(b"a-fresh-%d" % i, A) is not None
    assert (slots.held_by_group(A), slots.held_by(b"b")) == (3, 1)
    # keys counted alone (each its own host, as before), the fourth fresh key took b's
    alone = FairSlots(4, 4, stall_s=0.0, wait_s=0.0)
    for peer in (b"a-0", b"a-1", b"a-2", b"b"):
        _hold(alone, peer, None)
    for i in range(4):
        assert alone.enter(b"a-fresh-%d" % i) is not None
    assert alone.held_by(b"b") == 0


async def test_keys_of_one_host_share_by_key_as_before() -> None:
    slots = FairSlots(2, 2, stall_s=0.0, wait_s=0.0)
    _hold(slots, b"x", A)
    _hold(slots, b"y", A)
    assert slots.enter(b"x", A) is None  # y holds no more than x
    _hold(slots, b"z", B)  # z's host holds none, A's two: it took x's, stalled longest
    assert (slots.held_by(b"x"), slots.held_by(b"y")) == (0, 1)
    assert slots.enter(b"w", A) is not None  # from y (B's host holds no more than A's)
    assert (slots.held_by(b"y"), slots.held_by(b"z")) == (0, 1)


async def test_a_full_line_gives_a_newcomers_place_to_a_waiter_of_a_host_holding_more(
    autojump_clock: object,
) -> None:
    slots = FairSlots(2, 16, stall_s=2.0, wait_s=2.5)
    _hold(slots, b"a-0", A)
    _hold(slots, b"a-1", A)
    waiters = MAX_WAITING // MAX_WAITING_PER_PEER
    got: list[bytes] = []

    async def arrive(peer: bytes, host: object, at: float) -> None:
        await trio.sleep(at)
        slot = await slots.acquire(peer, host)
        if slot is not None:
            got.append(peer)
            slot.exchanging = True

    async with trio.open_nursery() as nursery:
        for i in range(waiters):  # A's fresh keys fill the line
            for _ in range(MAX_WAITING_PER_PEER):
                nursery.start_soon(arrive, b"a-fresh-%d" % i, A, 0.1)
        nursery.start_soon(arrive, b"b", B, 0.5)  # the line is full: B takes a place
    assert got[0] == b"b"  # the first slot to come of age (2 s) went to B


async def test_fresh_keys_of_one_host_do_not_shut_out_another_hosts_newcomers(
    autojump_clock: object,
) -> None:
    """The review's measure, on the DHT's slots: 64 held by one host, which opens fresh
    keys at 100 a second (each its own key) for 10 s; a newcomer of another host arrives
    every 0.5 s. Counted by key alone, 27.5 % of the newcomers got in."""
    slots = FairSlots(64, 16, stall_s=2.0, wait_s=2.5)
    for i in range(64):
        _hold(slots, b"a-%d" % i, A)
    honest = {"in": 0, "out": 0}

    async def stream(peer: bytes, host: object, tally: dict[str, int] | None) -> None:
        slot = await slots.acquire(peer, host)
        if tally is not None:
            tally["in" if slot is not None else "out"] += 1
        if slot is not None:
            slot.exchanging = True
            with slot.scope:
                await trio.sleep(30 if tally is None else 1.0)  # a flood slot is held
            slots.leave(slot)

    async with trio.open_nursery() as nursery:
        for tick in range(1000):  # 10 s at 100 opens a second
            nursery.start_soon(stream, b"a-fresh-%d" % tick, A, None)
            if tick % 50 == 0:
                nursery.start_soon(stream, b"b-%d" % tick, B, honest)
            await trio.sleep(0.01)
        nursery.cancel_scope.deadline = trio.current_time() + 5
    assert honest == {"in": 20, "out": 0}
