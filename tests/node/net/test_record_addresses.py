"""A capability record's addresses are a peer's text (review round 5, R5-9).

The attack: a record with the address ``/unix/p2p/<id>`` verified (addresses were never
checked), and a requester that looked its class up dialled it in a task of the node's
nursery; ``/unix/p2p/<id>`` parses as a unix path, but its head ``/unix`` does not, and
multiaddr's ``StringParseError`` (no ``NetworkError``) ended the daemon, again at every
lookup after a restart. Now the address parser refuses it with a ``NetworkError``,
records whose addresses are not their signer's dialable ones are refused (the DHT does
not store them, a fetch does not take them), and the dialling task logs whatever else.
"""

from __future__ import annotations

import types

import pytest
import trio

import protocol
from node.daemon.discovery import Discovery
from node.net import NetworkError
from node.net._libp2p_config import Libp2pConfig
from node.net._libp2p_dht import AdvertValidator, record_key
from node.net._libp2p_dialer import Dialer
from node.net._libp2p_transport import info_of, is_address_of
from protocol import Advert

from ...keys import key, pub

CHAIN = "aimx-test-addresses"
CLASS = "onnx.cpu.m8"
ATTACKER = key("attacker")
PID = protocol.peer_id(pub(ATTACKER))
BAD = [
    f"/unix/p2p/{PID}",  # the reviewer's
    "/unix",
    f"/ip4/1.2.3.4/p2p/{PID}/unix",
    "not a multiaddress",
    f"/ip4/999.1.1.1/tcp/1/p2p/{PID}",
]


def advert(*addresses: str) -> protocol.Signed[Advert]:
    return protocol.sign(
        Advert(
            node_id=pub(ATTACKER),
            seq=1,
            addresses=addresses,
            capability_classes=(CLASS,),
            runtimes=("onnx",),
            determinism_classes=("x",),
            cpu_cores=1,
            memory_mb=1,
            gpus=(),
            sandbox_layers=(),
            bench_score=1,
            price_floor=1,
            max_concurrency=1,
            issued_ms=0,
            expires_ms=10**13,
        ),
        ATTACKER,
        CHAIN,
    )


@pytest.mark.parametrize("address", BAD)
def test_an_address_that_does_not_parse_is_a_network_error(address: str) -> None:
    with pytest.raises(NetworkError):
        info_of(address)
    assert not is_address_of(address, pub(ATTACKER))


def test_a_record_must_give_its_signers_own_dialable_addresses() -> None:
    own = f"/ip4/127.0.0.1/tcp/4001/p2p/{PID}"
    other = f"/ip4/127.0.0.1/tcp/4001/p2p/{protocol.peer_id(pub(key('other')))}"
    relayed = f"{other}/p2p-circuit/p2p/{PID}"
    assert is_address_of(own, pub(ATTACKER)) and is_address_of(relayed, pub(ATTACKER))
    assert not is_address_of(other, pub(ATTACKER))
    validator = AdvertValidator(CHAIN, lambda: 1)
    validator.validate(record_key(pub(ATTACKER)), advert(own, relayed).raw)
    for bad in [*BAD, other]:
        with pytest.raises(ValueError, match="addresses"):
            validator.validate(record_key(pub(ATTACKER)), advert(own, bad).raw)


async def test_a_lookup_that_finds_a_record_with_a_bad_address_does_not_end_the_node() -> None:
    dialer = Dialer(
        None,  # type: ignore[arg-type]  # never reached: the address is refused first
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        Libp2pConfig(chain_id=CHAIN),
        local_peer=bytes(32),
        connected=set(),
        is_banned=lambda p: False,
        check_open=lambda: None,
        peers_changed=trio.Event,
    )
    records = [advert(address) for address in BAD]

    async def find_providers(capability_class: str, timeout: float) -> list[object]:
        return list(records)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:  # stands for the node's
            net = types.SimpleNamespace(
                find_providers=find_providers,
                connected_peers=lambda: set(),
                connect=dialer.connect,
            )
            node = types.SimpleNamespace(
                me=bytes(32), net=net, now_ms=lambda: 1, spawn=nursery.start_soon
            )
            found = await Discovery(node)._lookup(CLASS)  # type: ignore[arg-type]
            await trio.sleep(0.1)  # the dialling tasks run, and end, in the nursery
    assert found == [pub(ATTACKER)] * len(BAD)
