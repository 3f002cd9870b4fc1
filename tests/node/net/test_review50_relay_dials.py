"""Round 50, O2: py-libp2p's relay client half-closes its RESERVE and CONNECT streams when
a relayed dial fails (and a dial cut by its timeout does not even close them): a relay
that refused our CONNECTs, wrote 250 KB more and never closed made us keep 40 streams and
9.4 MiB over 20 dials, for the connection's life. Those streams are now reset once closed,
and when the dial fails or is cut. Round 51, N1: a relay answering OK and then nothing cut
the dial in the handshake after the wrapper had returned, and the circuit's stream stayed
open: the whole dial, its upgrade included, is covered now."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, Reservation
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg

from node.net._libp2p_outbound import ResettingStreams, reset_when_cancelled
from node.net._libp2p_transport import peer_id_of

from ...keys import key, pub
from .test_relay import node
from .test_review49_outbound import _held

PAD = 200_000
DIAL_TIMEOUT_S = 1.5


def _padding_relay(connect_status: int) -> Any:
    """A relay that grants a RESERVE, answers a CONNECT ``connect_status``, writes PAD bytes
    more and never closes (nor says anything on a circuit it accepted)."""

    async def handler(stream: Any) -> None:
        with contextlib.suppress(Exception):
            await _answer(stream, connect_status)

    handler.aimx_guarded = True  # type: ignore[attr-defined]  # the relay's own guard off
    return handler


async def _answer(stream: Any, connect_status: int) -> None:
    with contextlib.suppress(Exception):
        request = await read_delimited_msg(stream, HopMessage)
        if request.type == HopMessage.RESERVE:
            expire = int(time.time()) + 3600
            answer = HopMessage(
                type=HopMessage.STATUS, status=100, reservation=Reservation(expire=expire)
            )
        else:
            answer = HopMessage(type=HopMessage.STATUS, status=connect_status)
        await write_delimited_msg(stream, answer)
        if request.type == HopMessage.CONNECT and connect_status == 100:
            await trio.sleep(DIAL_TIMEOUT_S + 0.5)  # silent: the dial is cut in its handshake
        await stream.write(b"\0" * PAD)
        await trio.sleep(60)


async def _dials_through(connect_status: int) -> int:
    """Four dials through a padding relay answering ``connect_status``: the bytes we then
    hold unread from it."""
    async with node(161, dial_timeout=DIAL_TIMEOUT_S) as victim, node(162) as relay:
        relay._host.set_stream_handler(
            TProtocol(str(HOP_PROTOCOL_ID)), _padding_relay(connect_status)
        )
        address = relay.addresses()[0]
        await victim.connect(address)
        await trio.sleep(0.5)
        for n in range(4):
            nowhere = peer_id_of(pub(key(f"nowhere-{n}"))).to_base58()
            with contextlib.suppress(Exception):  # refused, or cut by the dial timeout
                await victim.connect(f"{address}/p2p-circuit/p2p/{nowhere}")
        await trio.sleep(1)
        return _held(victim, relay)


async def test_a_relay_padding_its_refusals_leaves_nothing_after_our_dials() -> None:
    with trio.fail_after(90):
        # the tree before: 2 streams a dial, 1.6 MB
        assert await _dials_through(204) < PAD  # NO_RESERVATION


async def test_a_relay_accepting_and_then_silent_leaves_nothing_after_our_dials() -> None:
    with trio.fail_after(90):
        # round 50's mend: the dial cut in the handshake left each circuit's stream open
        assert await _dials_through(100) < PAD  # OK


class _Stream:
    def __init__(self) -> None:
        self.resets = 0

    async def close(self) -> None:
        pass

    async def reset(self) -> None:
        self.resets += 1


class _Host:
    async def new_stream(self, peer_id: Any, protocol_ids: Any) -> _Stream:
        return _Stream()


async def test_streams_of_tasks_a_dial_starts_are_not_the_dials() -> None:
    """Round 51, N2: tasks a dial starts (a new connection's handlers) inherit its context,
    and the streams they opened were counted as the dial's, and reset with it."""
    view = ResettingStreams(_Host())
    theirs: list[_Stream] = []

    async def handler() -> None:
        theirs.append(await view.new_stream("peer", ["/x"]))

    async def dial() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handler)
        ours = await view.new_stream("peer", ["/hop"])
        assert ours.resets == 0
        raise ConnectionError("the relay refused")

    with pytest.raises(ConnectionError):
        await reset_when_cancelled(dial)()
    assert theirs[0].resets == 0  # round 50's mend reset it with the dial's own
