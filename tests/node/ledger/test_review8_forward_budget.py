"""Round-8 review R8-3: a forwarding node's cheap pre-check (R7-4) passes any settle of the
sender's own open escrow, so 1,030 such settles signed once (65,920 Bids) and replayed in a
cycle past the node's memory of verified messages cost it 65 signature checks each, and the
coordinator nothing. Now each peer has a bucket of carried-message checks at a forwarder
(``FORWARD_CHECKS_BURST``, refilled at ``FORWARD_CHECKS_PER_S``): past it a transaction is
not forwarded, not finally (no rejection prefix) and without blame.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from node.ledger._serve import FORWARD_CHECKS_BURST, FORWARD_CHECKS_PER_S, Server
from node.ledger._wire import REJECTED_PREFIX
from node.net import RequestRejected

from ...keys import key, pub
from ...ledger.helpers import ALICE
from ...ledger.test_review6_settle_cost import PAYEES, counting_checks
from .test_review7_forwarding import _Forwarder, _settle

PEER = pub(key("a relaying peer"))
OTHER = pub(key("another peer"))


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock()


async def test_one_peers_settles_cost_a_forwarder_a_bounded_number_of_checks(
    clock: trio.testing.MockClock,
) -> None:
    service = _Forwarder()
    server = Server(service)  # type: ignore[arg-type]
    per_settle = len(PAYEES)
    fits = FORWARD_CHECKS_BURST // per_settle
    settles = [_settle(ALICE, service.job, seq=1 + i) for i in range(fits + 3)]
    for raw in settles[:fits]:
        await server.serve_tx(PEER, raw)
    for raw in settles[fits:]:
        with counting_checks() as checks, pytest.raises(RequestRejected) as refused:
            await server.serve_tx(PEER, raw)
        assert checks[0] == 1  # its own signature only; before: its Bids too
        assert not str(refused.value).startswith(REJECTED_PREFIX)  # not final
        assert "not forwarded" in str(refused.value)
    assert len(service.forwarded) == fits and service.blamed == []
    await server.serve_tx(OTHER, settles[fits])  # another peer has a bucket of its own
    clock.jump(per_settle / FORWARD_CHECKS_PER_S)  # the bucket refills with time
    await server.serve_tx(PEER, settles[fits + 1])
    assert len(service.forwarded) == fits + 2
