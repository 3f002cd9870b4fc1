"""Several whole daemons (:class:`node.daemon.Node`) in one trio run over a MemoryHub.

Real ledger services, real sandbox runs (one shared :class:`sandbox.Sandbox`), real
scheduler machines; only the transport is in memory. Time is trio's real clock: sandbox
runs happen in threads, which virtual time would skip over.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import nacl.signing
import numpy as np
import trio

import ledger
from node.config import ContributorConfig, CoordinatorConfig, NodeConfig, RequesterConfig
from node.daemon import Node, ProviderProfile
from node.net import MemoryHub
from sandbox import Sandbox, SandboxConfig, determinism_class, tiny_model_path

CHAIN = "aimx-test"
FUNDS = 1_000_000_000
BLOCK_MS = 100


def key(n: int) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(bytes([n]) * 32)


def tiny_inputs() -> dict[str, np.ndarray[Any, Any]]:
    import onnx

    model = onnx.load(str(tiny_model_path()))
    inp = model.graph.input[0]
    dims = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
    return {inp.name: np.linspace(-1, 1, int(np.prod(dims)), dtype=np.float32).reshape(dims)}


@dataclass
class Cluster:
    hub: MemoryHub
    coordinator: Node
    requester: Node
    contributors: list[Node] = field(default_factory=list)

    @property
    def nodes(self) -> list[Node]:
        return [self.coordinator, self.requester, *self.contributors]

    async def settle_blocks(self, n: int = 2) -> None:
        """Wait until every node has committed ``n`` more blocks than the coordinator has now."""
        target = self.coordinator.ledger.state.height + n
        for node in self.nodes:
            await node.ledger.wait_height(target)


@asynccontextmanager
async def cluster(
    contributors: int = 3,
    *,
    cheaters: tuple[int, ...] = (),
    price_floor: int = 1_000,
    stake: int = 0,
    seed: int = 1,
) -> AsyncIterator[Cluster]:
    hub = MemoryHub(CHAIN, rng=random.Random(seed))
    ckey, rkey = key(1), key(2)
    pkeys = [key(10 + i) for i in range(contributors)]
    balances = {bytes(rkey.verify_key): FUNDS}
    if stake:
        balances.update({bytes(k.verify_key): stake for k in pkeys})
    genesis = ledger.make_genesis(CHAIN, [bytes(ckey.verify_key)], balances)
    coordinator_cfg = CoordinatorConfig(block_interval_ms=BLOCK_MS)
    with Sandbox(SandboxConfig(pool_size=max(1, contributors))) as sandbox:
        profile = ProviderProfile(
            determinism_class=determinism_class("onnx", "cpu", "extended"),
            memory_mb=4096,
            sandbox_layers=tuple(sandbox.layers_in_use()),
        )
        async with AsyncExitStack() as stack:
            nets = {
                bytes(k.verify_key): await stack.enter_async_context(hub.open(k))
                for k in (ckey, rkey, *pkeys)
            }
            nursery = await stack.enter_async_context(trio.open_nursery())

            async def start(k: nacl.signing.SigningKey, cfg: NodeConfig) -> Node:
                net = nets[bytes(k.verify_key)]
                node = Node(
                    k,
                    cfg,
                    net,
                    genesis,
                    sandbox=sandbox if "contributor" in cfg.roles else None,
                    profile=profile if "contributor" in cfg.roles else None,
                    rng=random.Random(seed),
                )
                await nursery.start(node.run)
                return node

            coord = await start(
                ckey,
                NodeConfig(chain_id=CHAIN, roles=("coordinator",), coordinator=coordinator_cfg),
            )
            req = await start(
                rkey,
                NodeConfig(
                    chain_id=CHAIN,
                    roles=("requester",),
                    coordinator=coordinator_cfg,
                    requester=RequesterConfig(deadline_ms=20_000, bid_window_ms=150),
                ),
            )
            cl = Cluster(hub, coord, req)
            for i, k in enumerate(pkeys):
                cfg = NodeConfig(
                    chain_id=CHAIN,
                    roles=("contributor",),
                    coordinator=coordinator_cfg,
                    contributor=ContributorConfig(
                        price_floor=price_floor,
                        test_corrupt_outputs=i in cheaters,
                        stake=stake,
                    ),
                )
                cl.contributors.append(await start(k, cfg))
            if stake:
                for node in cl.contributors:
                    node.stake(stake)
            try:
                yield cl
            finally:
                nursery.cancel_scope.cancel()
