"""Bootstrap peers are redialled (issue 15): the backoff between redials, and a bootstrap
peer that restarts on the same address is reconnected at once, not after py-libp2p's
60 s negative cache of peers whose dials failed."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import protocol
from node.net import PeerUnreachable, _peer_memory
from node.net._libp2p_config import Backoff
from node.net.libp2p_host import Libp2pConfig, Libp2pNetwork, open_libp2p_network

from ...keys import key
from .helpers import CHAIN

ECHO = "/aimx/test/echo/1"


async def echo(peer: bytes, data: bytes) -> bytes:
    return data


def test_backoff_doubles_up_to_its_cap_each_delay_in_its_upper_half() -> None:
    backoff = Backoff(0.25, 1.0, random.Random(1))
    fulls = [0.25, 0.5, 1.0, 1.0, 1.0]
    delays = [backoff.delay() for _ in fulls]
    for delay, full in zip(delays, fulls, strict=True):
        assert full / 2 <= delay <= full
    backoff.reset()
    assert 0.125 <= backoff.delay() <= 0.25
    # two nodes that lost the peer together do not redial in step
    other = Backoff(0.25, 1.0, random.Random(2))
    assert [other.delay() for _ in fulls] != delays
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0, random.Random(1))


@asynccontextmanager
async def _node(
    n: int, listen: str, bootstrap: tuple[str, ...] = ()
) -> AsyncIterator[Libp2pNetwork]:
    config = Libp2pConfig(chain_id=CHAIN, listen=(listen,), bootstrap=bootstrap)
    async with open_libp2p_network(key(n), config) as net:
        net.set_handler(ECHO, echo)
        yield net


async def _until(check: object, what: str) -> None:
    assert callable(check)
    for _ in range(400):  # bounded: 20 s
        if check():
            return
        await trio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_bootstrap_peer_restarted_on_its_address_is_redialled_past_the_negative_cache() -> (
    None
):
    with trio.fail_after(60):
        async with _node(1, "/ip4/127.0.0.1/tcp/0") as coordinator:
            address = coordinator.addresses()[0]
            listen = address.partition("/p2p/")[0]
            me = coordinator.local_peer
        # the coordinator is gone; a node bootstrapping from it keeps trying
        async with _node(2, "/ip4/127.0.0.1/tcp/0", bootstrap=(address,)) as member:
            assert me not in member.connected_peers()
            # a request to it fails (and py-libp2p now holds it in its negative cache)
            with pytest.raises(PeerUnreachable):
                await member.request(me, ECHO, b"x", timeout=5)
            await trio.sleep(1.0)
            async with _node(1, listen) as back:
                assert back.addresses()[0] == address  # same port, same identity
                # far sooner than the negative cache's 60 s: the redial lifts it
                await _until(lambda: me in member.connected_peers(), "the redial")
                assert await member.request(me, ECHO, b"again", timeout=5) == b"again"
            await _until(lambda: me not in member.connected_peers(), "the disconnection")
            async with _node(1, listen):
                await _until(lambda: me in member.connected_peers(), "the second redial")


async def test_a_bootstrap_peer_back_on_another_address_dials_the_peers_it_knew(
    tmp_path: Path,
) -> None:
    """The coordinator's port was taken while it was down: it comes back on another one.
    The member knows only the old address and can never reach it there; the coordinator
    dials the peers it remembers (peers.json), and the member is connected again."""
    peers = tmp_path / "peers.json"
    with trio.fail_after(60):
        config = Libp2pConfig(
            chain_id=CHAIN,
            listen=("/ip4/127.0.0.1/tcp/0",),
            peers_file=peers,
            peers_save_interval=0.1,
        )
        async with trio.open_nursery() as nursery:
            stop, stopped = trio.Event(), trio.Event()

            async def first_run(task_status: trio.TaskStatus[Libp2pNetwork]) -> None:
                async with open_libp2p_network(key(1), config) as net:
                    task_status.started(net)
                    await stop.wait()
                stopped.set()

            coordinator = await nursery.start(first_run)
            address = coordinator.addresses()[0]
            me = coordinator.local_peer
            async with _node(2, "/ip4/127.0.0.1/tcp/0", bootstrap=(address,)) as member:
                await _until(lambda: me in member.connected_peers(), "the first connection")
                await _until(lambda: peers.exists(), "peers.json")
                assert protocol.peer_id(member.local_peer) in peers.read_text()
                stop.set()
                await stopped.wait()
                await _until(lambda: me not in member.connected_peers(), "the coordinator gone")
                async with open_libp2p_network(key(1), config) as back:  # on another port
                    back.set_handler(ECHO, echo)
                    assert back.addresses()[0] != address
                    await _until(lambda: me in member.connected_peers(), "the dial back")
                    assert await member.request(me, ECHO, b"hi", timeout=5) == b"hi"


def test_remembered_peers_from_a_damaged_file_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    for text in ("{not json", "[1, 2]", '{"peers": "x"}'):
        path.write_text(text)
        assert _peer_memory.load(path) == []
    long = "/ip4/127.0.0.1/tcp/1/p2p/" + "x" * 400
    path.write_text(json.dumps({"peers": [7, "nope", long, "/ip4/127.0.0.1/tcp/1/p2p/Qm"]}))
    assert _peer_memory.load(path) == ["/ip4/127.0.0.1/tcp/1/p2p/Qm"]
    _peer_memory.save(path, [f"/ip4/127.0.0.1/tcp/{i}/p2p/Qm" for i in range(100)])
    assert len(_peer_memory.load(path)) == _peer_memory.MAX_REMEMBERED
    assert path.stat().st_mode & 0o777 == 0o600
    assert _peer_memory.merge(["a", "b"], ["b", "c"], limit=2) == ["a", "b"]
