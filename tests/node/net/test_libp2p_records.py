"""Pacing of provider announcements (py-libp2p drops more than 10 per peer per 10 s)."""

from __future__ import annotations

import trio
import trio.testing

from node.net._libp2p_records import PROVIDE_WINDOW_S, PROVIDES_PER_WINDOW, ProvidePacer


async def test_provides_are_paced_to_the_receivers_rate_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pacer = ProvidePacer()
    sent_at: list[float] = []
    start = trio.current_time()
    for _ in range(3 * PROVIDES_PER_WINDOW):
        await pacer.wait()
        pacer.take()
        sent_at.append(trio.current_time() - start)
    # no window of PROVIDE_WINDOW_S holds more than PROVIDES_PER_WINDOW
    for i, t in enumerate(sent_at):
        assert sum(1 for u in sent_at[i:] if u < t + PROVIDE_WINDOW_S) <= PROVIDES_PER_WINDOW
    # and nothing waits longer than it has to: the first window's go at once
    assert sent_at[:PROVIDES_PER_WINDOW] == [0.0] * PROVIDES_PER_WINDOW
    assert sent_at[-1] == 2 * PROVIDE_WINDOW_S


async def test_a_pacer_full_now_is_free_after_its_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pacer = ProvidePacer()
    for _ in range(PROVIDES_PER_WINDOW):
        assert not pacer.full()
        pacer.take()
    assert pacer.full()
    await trio.sleep(PROVIDE_WINDOW_S)
    assert not pacer.full()
