"""The ``networks`` fixture: opens N connected nodes of one implementation.

Every test that takes it runs once per implementation (the conformance suite).
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

import nacl.signing
import pytest

from node.net import MemoryHub, Network

from ...keys import key
from .helpers import CHAIN

OpenNetworks = Callable[[int], AbstractAsyncContextManager[list[Network]]]


def wall_ms() -> int:
    return int(time.time() * 1000)


class _Factory:
    """Opens groups of nodes of one implementation; keys are numbered 1, 2, ... per test."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.next_key = 1
        self.hub = MemoryHub(CHAIN, rng=random.Random(5), now_ms=wall_ms)

    def __call__(self, n: int) -> AbstractAsyncContextManager[list[Network]]:
        return self._memory(n) if self.kind == "memory" else self._libp2p(n)

    def _key(self) -> nacl.signing.SigningKey:
        self.next_key += 1
        return key(self.next_key - 1)

    @asynccontextmanager
    async def _memory(self, n: int) -> AsyncIterator[list[Network]]:
        async with AsyncExitStack() as stack:
            nets: list[Network] = []
            for _ in range(n):
                nets.append(await stack.enter_async_context(self.hub.open(self._key())))
            for net in nets[1:]:
                await net.connect(nets[0].addresses()[0])
            yield nets

    @asynccontextmanager
    async def _libp2p(self, n: int) -> AsyncIterator[list[Network]]:
        from node.net.libp2p_host import Libp2pConfig, open_libp2p_network

        async with AsyncExitStack() as stack:
            nets: list[Network] = []
            for _ in range(n):
                config = Libp2pConfig(
                    chain_id=CHAIN,
                    listen=("/ip4/127.0.0.1/tcp/0",),
                    bootstrap=nets[0].addresses()[:1] if nets else (),
                )
                net = open_libp2p_network(self._key(), config)
                nets.append(await stack.enter_async_context(net))
            yield nets


@pytest.fixture(params=["memory", "libp2p"])
def networks(request: pytest.FixtureRequest) -> OpenNetworks:
    if request.param == "libp2p":
        pytest.importorskip("node.net.libp2p_host")
    return _Factory(request.param)
