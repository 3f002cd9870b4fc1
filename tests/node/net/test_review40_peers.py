"""Round 40, F2: ``peers.json`` kept the addresses of whoever was connected, most recent
first: 20 strangers' keys took 63 of its 64 entries, pushed out a remembered peer that was
not connected (a coordinator that moved: what the file is for), and made the node dial 62
addresses of their choosing at its next start. Now the addresses of the node's own peers
(its bootstrap peers, peers it asked something) come first, then those remembered; other
peers only fill free room (half the file at most), one address per IP, and only at the
address their connection comes from."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path

import trio

import protocol
from node.net import _peer_memory
from node.net.libp2p_host import Libp2pConfig, open_libp2p_network

from ...keys import key
from .helpers import CHAIN, node

MOVED = "/ip4/127.0.0.1/tcp/9/p2p/" + protocol.peer_id(bytes(key(199).verify_key))


def test_other_peers_fill_only_free_room_and_never_push_out_what_is_kept() -> None:
    kept = [f"/ip4/10.0.0.{i}/tcp/1/p2p/K{i}" for i in range(40)]
    mine = ["/ip4/10.1.0.1/tcp/1/p2p/M"]
    others = [f"/ip4/10.2.0.{i}/tcp/1/p2p/O{i}" for i in range(100)]
    merged = _peer_memory.merge(mine, kept, others)
    assert merged[:41] == mine + kept  # all kept, ours first
    assert len(merged) == _peer_memory.MAX_REMEMBERED
    assert merged[41:] == others[:23]
    # with an empty file, other peers take half of it at most
    assert _peer_memory.merge([], [], others) == others[: _peer_memory.MAX_REMEMBERED // 2]
    # and ours push out the oldest kept
    ours = [f"/ip4/10.3.0.{i}/tcp/1/p2p/N{i}" for i in range(60)]
    assert _peer_memory.merge(ours, kept, others) == ours + kept[:4]


async def test_strangers_do_not_push_out_a_remembered_peer(tmp_path: Path) -> None:
    peers = tmp_path / "peers.json"
    peers.write_text(json.dumps({"peers": [MOVED]}))
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            boot = await stack.enter_async_context(node(91))
            config = Libp2pConfig(
                chain_id=CHAIN,
                listen=("/ip4/127.0.0.1/tcp/0",),
                bootstrap=boot.addresses()[:1],
                peers_file=peers,
                peers_save_interval=0.1,
            )
            victim = await stack.enter_async_context(open_libp2p_network(key(92), config))
            strangers = [
                await stack.enter_async_context(
                    node(93 + i, listen=tuple(f"/ip4/127.0.0.{j}/tcp/0" for j in (1, 2, 3)))
                )
                for i in range(4)
            ]
            for stranger in strangers:
                await stranger.connect(victim.addresses()[0])
            names = {protocol.peer_id(s.local_peer) for s in strangers}

            def saved() -> list[str]:
                return list(json.loads(peers.read_text())["peers"])

            for _ in range(100):  # identify has told the victim their listen addresses
                await trio.sleep(0.1)
                if any(a.rsplit("/", 1)[1] in names for a in saved()):
                    break
            await trio.sleep(0.5)
            held = saved()
            from_strangers = [a for a in held if a.rsplit("/", 1)[1] in names]
            # the tree before kept 12 (3 each), and pushed the remembered one out past 64;
            # now one, at the address their connections come from
            assert len(from_strangers) == 1, held
            assert from_strangers[0].startswith("/ip4/127.0.0.1/"), held
            assert MOVED in held
            assert held[0].endswith(protocol.peer_id(boot.local_peer))  # ours first
