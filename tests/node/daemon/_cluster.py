"""Several whole daemons (:class:`node.daemon.Node`) in one trio run over a MemoryHub.

Real ledger services, real sandbox runs (one shared :class:`sandbox.Sandbox`), real
scheduler machines; only the transport is in memory. Time is trio's real clock: sandbox
runs happen in threads, which virtual time would skip over.
"""

from __future__ import annotations

import contextlib
import importlib.util
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.signing
import numpy as np
import trio

import ledger
from node.config import ContributorConfig, CoordinatorConfig, NodeConfig, RequesterConfig
from node.daemon import Node, ProviderProfile, run_classes
from node.net import MemoryHub
from sandbox import JobRunner, Sandbox, SandboxConfig, determinism_class, tiny_model_path
from sandbox.testing import CorruptingRunner, SlowRunner

from ...keys import key

CHAIN = "aimx-test"
FUNDS = 1_000_000_000
BLOCK_MS = 100
#: How long a slow contributor waits before each run (and says so in its bids).
SLOW_MS = 2_000


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
    scopes: dict[bytes, trio.CancelScope] = field(default_factory=dict)
    #: Starts a node again with the key and configuration it had (its state dir too).
    restart: Callable[[Node], Awaitable[Node]] | None = None

    @property
    def nodes(self) -> list[Node]:
        return [n for n in (self.coordinator, self.requester, *self.contributors) if self.alive(n)]

    def coordinator_state(self) -> ledger.State:
        return self.coordinator.ledger.state

    def alive(self, node: Node) -> bool:
        return not self.scopes[node.me].cancel_called

    def kill(self, node: Node) -> None:
        """Stop ``node`` at once, its network with it (an in-process SIGKILL)."""
        self.scopes[node.me].cancel()

    async def settle_blocks(self, n: int = 2) -> None:
        """Wait until every live node has committed ``n`` blocks past the coordinator's now."""
        target = self.coordinator.ledger.state.height + n
        for node in self.nodes:
            await node.ledger.wait_height(target)


@asynccontextmanager
async def cluster(
    contributors: int = 3,
    *,
    cheaters: tuple[int, ...] = (),
    slow: tuple[int, ...] = (),
    price_floor: int = 1_000,
    stake: int = 0,
    deadline_ms: int = 20_000,
    seed: int = 1,
    state_root: Path | None = None,
    runner: Callable[[int], JobRunner] | None = None,
    requester_settings: dict[str, Any] | None = None,
    min_fee: int = 0,
) -> AsyncIterator[Cluster]:
    """A coordinator, a requester (funded in the genesis) and ``contributors`` providers.

    ``cheaters`` return wrong outputs (and bid lower, so they are awarded); ``slow`` wait
    ``SLOW_MS`` before each run; with ``stake`` each contributor gets that much in the
    genesis and stakes it. With ``state_root`` each node keeps its state in a directory of
    its own there, and ``Cluster.restart`` brings a killed node back with it. ``runner(i)``
    is contributor ``i``'s job runner instead of the shared sandbox (no sandbox is started).
    ``requester_settings`` are more ``[requester]`` settings of the requester. ``min_fee``:
    the genesis's (every node pays it; the contributors hold nothing to pay it from).
    """
    hub = MemoryHub(CHAIN, rng=random.Random(seed))
    ckey, rkey = key(1), key(2)
    pkeys = [key(10 + i) for i in range(contributors)]
    balances = {bytes(rkey.verify_key): FUNDS}
    if stake:
        balances.update({bytes(k.verify_key): stake for k in pkeys})
    genesis = ledger.make_genesis(CHAIN, [bytes(ckey.verify_key)], balances, min_fee=min_fee)
    coordinator_cfg = CoordinatorConfig(block_interval_ms=BLOCK_MS, slash_amount=stake or 1)
    with contextlib.ExitStack() as stack:
        layers: tuple[str, ...] = ()
        if runner is None:
            sandbox = stack.enter_context(Sandbox(SandboxConfig(pool_size=max(1, contributors))))
            layers = tuple(sandbox.layers_in_use())
        # As a probe of this machine would give: ONNX, and TorchScript where torch is
        # installed, each run in the class the sandbox reports for it.
        runtimes = ("onnx", "torchscript") if importlib.util.find_spec("torch") else ("onnx",)
        profile = ProviderProfile(
            determinism_class=determinism_class("onnx", "cpu", "extended"),
            determinism_classes=run_classes(runtimes, ("CPUExecutionProvider",)),
            # torch's import on a loaded test machine (two cold workers at once) can take
            # well past the 4 s a daemon promises (TORCH_START_MS)
            start_ms={"torchscript": 12_000},
            memory_mb=4096,
            runtimes=runtimes,
            sandbox_layers=layers,
        )
        scopes: dict[bytes, trio.CancelScope] = {}
        # How each contributor runs its jobs: the sandbox, wrapped for the faulty ones.
        runners: dict[bytes, JobRunner] = {}
        for i, k in enumerate(pkeys):
            chosen: JobRunner = sandbox if runner is None else runner(i)
            if i in cheaters:
                chosen = CorruptingRunner(chosen)
            if i in slow:
                chosen = SlowRunner(chosen, SLOW_MS / 1000)
            runners[bytes(k.verify_key)] = chosen

        async def life(
            k: nacl.signing.SigningKey,
            cfg: NodeConfig,
            *,
            task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED,
        ) -> None:
            with trio.CancelScope() as scope:
                scopes[bytes(k.verify_key)] = scope
                async with hub.open(k) as net, trio.open_nursery() as inner:
                    contributor = "contributor" in cfg.roles
                    node = Node(
                        k,
                        cfg,
                        net,
                        genesis,
                        runner=runners.get(bytes(k.verify_key)) if contributor else None,
                        profile=profile if contributor else None,
                        rng=random.Random(seed),
                        state_dir=(
                            state_root / bytes(k.verify_key).hex()[:16] if state_root else None
                        ),
                    )
                    await inner.start(node.run)
                    task_status.started(node)

        async with trio.open_nursery() as nursery:
            started: dict[bytes, tuple[nacl.signing.SigningKey, NodeConfig]] = {}

            async def start(k: nacl.signing.SigningKey, cfg: NodeConfig) -> Node:
                node: Node = await nursery.start(life, k, cfg)
                started[node.me] = (k, cfg)
                return node

            async def restart(old: Node) -> Node:
                k, cfg = started[old.me]
                # a killed node leaves the hub once its task has unwound (bounded wait)
                for _ in range(500):
                    if not hub.joined(old.me):
                        break
                    await trio.sleep(0.01)
                new = await start(k, cfg)
                if cl.requester is old:
                    cl.requester = new
                cl.contributors = [new if n is old else n for n in cl.contributors]
                return new

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
                    requester=RequesterConfig(
                        deadline_ms=deadline_ms, bid_window_ms=150, **(requester_settings or {})
                    ),
                ),
            )
            cl = Cluster(hub, coord, req, scopes=scopes, restart=restart)
            for i, k in enumerate(pkeys):
                cfg = NodeConfig(
                    chain_id=CHAIN,
                    roles=("contributor",),
                    coordinator=coordinator_cfg,
                    contributor=ContributorConfig(
                        # a cheater undercuts the others, so that it is awarded
                        price_floor=price_floor // 2 if i in cheaters else price_floor,
                        base_run_ms=SLOW_MS + 200 if i in slow else 200,
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
