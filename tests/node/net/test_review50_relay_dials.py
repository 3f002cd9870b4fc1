"""Round 50, O2: py-libp2p's relay client half-closes its RESERVE and CONNECT streams when
a relayed dial fails (and a dial cut by its timeout does not even close them): a relay
that refused our CONNECTs, wrote 250 KB more and never closed made us keep 40 streams and
9.4 MiB over 20 dials, for the connection's life. Those streams are now reset once closed,
and when the dial fails or is cut."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, Reservation
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg

from node.net._libp2p_transport import peer_id_of

from ...keys import key, pub
from .test_libp2p_guards import node
from .test_review49_outbound import _held

PAD = 200_000


async def _padding_relay(stream: Any) -> None:
    """Grants a RESERVE, refuses a CONNECT (no reservation), writes PAD bytes more and never
    closes."""
    with contextlib.suppress(Exception):
        request = await read_delimited_msg(stream, HopMessage)
        if request.type == HopMessage.RESERVE:
            expire = int(time.time()) + 3600
            answer = HopMessage(
                type=HopMessage.STATUS, status=100, reservation=Reservation(expire=expire)
            )
        else:
            answer = HopMessage(type=HopMessage.STATUS, status=204)  # NO_RESERVATION
        await write_delimited_msg(stream, answer)
        await stream.write(b"\0" * PAD)
        await trio.sleep(60)


_padding_relay.aimx_guarded = True  # type: ignore[attr-defined]  # the relay's own guard off


async def test_a_relay_padding_its_refusals_leaves_nothing_after_our_dials() -> None:
    with trio.fail_after(90):
        async with node(161) as victim, node(162) as relay:
            relay._host.set_stream_handler(TProtocol(str(HOP_PROTOCOL_ID)), _padding_relay)
            address = relay.addresses()[0]
            await victim.connect(address)
            await trio.sleep(0.5)
            for n in range(4):
                nowhere = peer_id_of(pub(key(f"nowhere-{n}"))).to_base58()
                with contextlib.suppress(Exception):  # refused, as the relay said
                    await victim.connect(f"{address}/p2p-circuit/p2p/{nowhere}")
            await trio.sleep(0.5)
            assert _held(victim, relay) < PAD  # the tree before: 2 streams a dial, 1.6 MB
