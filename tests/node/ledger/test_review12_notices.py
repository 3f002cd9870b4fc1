"""Review round 12, R12-4: a coordinator has at most ``MAX_NOTICES_IN_FLIGHT`` drop notices
on their way, each waiting up to ``DROPPED_NOTICE_TIMEOUT_S``, and skips the rest. A few
peers that never answer, with a transaction dropped every block, held every place: every
other sender's notices were skipped, and one refusal stalled an honest node for a
transaction's lifetime. A sender whose notice went unanswered is now sent none for
``UNRESPONSIVE_S``.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import trio
import trio.testing

import ledger
from node.ledger import _produce
from node.ledger._produce import Production
from node.net import NetworkTimeout

from ...keys import key, pub

HONEST = pub(key("r12-4 honest sender"))
SILENT = [pub(key(f"r12-4 silent {i}")) for i in range(4)]


def _drop(sender: bytes) -> list[ledger.TxDropped]:
    return [ledger.TxDropped(sender, 1, bytes(32), "refused")]


async def test_peers_that_never_answer_their_notices_do_not_hold_every_place(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_produce, "MAX_NOTICES_IN_FLIGHT", len(SILENT))
    told: list[bytes] = []

    async def request(peer: bytes, protocol_id: str, data: bytes, timeout: float) -> bytes:
        told.append(peer)
        if peer in SILENT:
            await trio.sleep(timeout)
            raise NetworkTimeout("no answer")
        return b""

    async with trio.open_nursery() as nursery:
        service = SimpleNamespace(
            net=SimpleNamespace(local_peer=pub(key("coordinator")), request=request),
            nursery=nursery,
        )
        production = Production(service)  # type: ignore[arg-type]
        for _block in range(3):  # every block, each silent peer has a drop, then we do
            for peer in SILENT:
                production._tell_dropped(peer, _drop(peer))
            production._tell_dropped(HONEST, _drop(HONEST))
            await trio.sleep(_produce.DROPPED_NOTICE_TIMEOUT_S + 1)
    # the first block's notices to the silent peers took every place; from the next on
    # they are not sent again for a while, and the honest sender is told
    assert told.count(HONEST) == 2  # before: 0
    assert all(told.count(peer) == 1 for peer in SILENT)
