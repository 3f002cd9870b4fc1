"""A joining node takes the genesis a bootstrap peer sends only if its hash is the one the
node was given: a peer cannot hand it a chain of the peer's own making."""

from __future__ import annotations

import random

import ledger
import protocol
from node.daemon import GenesisUnavailable
from node.daemon.genesis import GENESIS_PROTOCOL, fetch_genesis, genesis_server
from node.net import MemoryHub

from ...keys import key, pub

CHAIN = "aimx-test"


def _address(n: int) -> str:
    return f"/memory/{n}/p2p/{protocol.peer_id(pub(key(n)))}"


async def _fetch(served: ledger.Genesis, genesis_hash: str) -> ledger.Genesis | Exception:
    """What a node joining with ``genesis_hash`` gets from a peer serving ``served``."""
    hub = MemoryHub(CHAIN, rng=random.Random(1))
    async with hub.open(key(1)) as bootstrap, hub.open(key(2)) as joining:
        bootstrap.set_handler(GENESIS_PROTOCOL, genesis_server(served))
        try:
            return await fetch_genesis(joining, (_address(1),), CHAIN, genesis_hash)
        except GenesisUnavailable as exc:
            return exc


async def test_the_pinned_genesis_is_taken() -> None:
    real = ledger.make_genesis(CHAIN, [pub(key(1))])
    assert await _fetch(real, real.hash().hex()) == real


async def test_a_bootstrap_peers_own_chain_is_refused() -> None:
    real = ledger.make_genesis(CHAIN, [pub(key(1))])
    # Same chain id, the peer as coordinator and with the money: another chain.
    forged = ledger.make_genesis(CHAIN, [pub(key(1))], {pub(key(1)): 10**12})
    refused = await _fetch(forged, real.hash().hex())
    assert isinstance(refused, GenesisUnavailable) and "check --genesis-hash" in str(refused)


async def test_joining_without_a_genesis_hash_says_how_to_get_one() -> None:
    real = ledger.make_genesis(CHAIN, [pub(key(1))])
    refused = await _fetch(real, "")
    assert isinstance(refused, GenesisUnavailable) and "pass --genesis-hash" in str(refused)
