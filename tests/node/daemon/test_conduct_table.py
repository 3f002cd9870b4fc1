"""The misbehaviour table is bounded without being wiped (review round 16, A5): 4,096
one-off keys that misbehaved once each cleared every score, a key near its ban among them."""

from __future__ import annotations

import trio.testing

from node.daemon._conduct import BAN_SCORE, MAX_PEERS_COUNTED, OFFENCE_POINTS, Conduct
from node.daemon._metrics import NodeMetrics


def test_throwaway_keys_do_not_wipe_a_near_banned_keys_score() -> None:
    async def main() -> None:
        banned: list[bytes] = []
        conduct = Conduct(NodeMetrics(), ban=lambda peer, s: banned.append(peer))
        near = b"\x01" * 32
        offences = int(BAN_SCORE // OFFENCE_POINTS) - 1
        for _ in range(offences):
            conduct.misbehaved(near, "bad frame")
        before = conduct.score(near)
        assert before >= BAN_SCORE - OFFENCE_POINTS - 1
        for i in range(MAX_PEERS_COUNTED + 10):  # one offence each from fresh keys
            conduct.misbehaved(i.to_bytes(32, "big"), "bad frame")
        assert conduct.score(near) == before  # the clock stood still: nothing decayed
        conduct.misbehaved(near, "bad frame")  # its next offence bans it
        assert banned == [near]
        assert len(conduct._scores) <= MAX_PEERS_COUNTED

    trio.run(main, clock=trio.testing.MockClock())
