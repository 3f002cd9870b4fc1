"""Starting a whole node from a data directory: keys, genesis, ledger store, libp2p, sandbox,
the :class:`Node`, the HTTP API and ``node.json`` (specs/daemon.md, "Start-up")."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import nacl.signing
import trio

import ledger
import protocol
from sandbox import Sandbox, SandboxConfig

from .._errors import ConfigError
from .._http import serve_http
from .._runinfo import RunInfo, remove_runinfo, write_runinfo
from ..config import NodeConfig
from ..keystore import load_or_create_identity
from ..ledger_service import ledger_db_path
from ..net import Network, NetworkError
from ._api import make_router
from ._errors import GenesisUnavailable
from ._node import GENESIS_PROTOCOL, Node, ProviderProfile

if TYPE_CHECKING:
    from ..probe import ProbeReport

log = logging.getLogger(__name__)

GENESIS_FILE = "genesis.bin"


def genesis_path(data_dir: Path) -> Path:
    return data_dir / GENESIS_FILE


def read_genesis(data_dir: Path) -> ledger.Genesis | None:
    path = genesis_path(data_dir)
    if not path.exists():
        return None
    try:
        return ledger.Genesis.decode(path.read_bytes())
    except (OSError, ledger.LedgerError) as exc:
        raise GenesisUnavailable(
            f"cannot read {path}: {exc}; remove it to fetch it again"
        ) from None


def write_genesis(data_dir: Path, genesis: ledger.Genesis) -> None:
    tmp = data_dir / f".{GENESIS_FILE}.tmp"
    tmp.write_bytes(genesis.encode())
    os.replace(tmp, genesis_path(data_dir))


async def fetch_genesis(net: Network, bootstrap: tuple[str, ...], chain_id: str) -> ledger.Genesis:
    """Ask the bootstrap peers for the genesis (trust on first use; specs/daemon.md)."""
    for address in bootstrap:
        try:
            peer = protocol.public_key_of(address.rsplit("/p2p/", 1)[1])
            data = await net.request(peer, GENESIS_PROTOCOL, b"", timeout=10)
            genesis = ledger.Genesis.decode(data)
        except (
            IndexError,
            ValueError,
            protocol.ProtocolError,
            NetworkError,
            ledger.LedgerError,
        ) as exc:
            log.warning("no genesis from %s: %s", address, exc)
            continue
        if genesis.chain_id != chain_id:
            raise GenesisUnavailable(
                f"the bootstrap peer runs chain {genesis.chain_id!r}, not {chain_id!r}; "
                "set chain_id to match or use another bootstrap peer"
            )
        return genesis
    raise GenesisUnavailable(
        "no genesis in the data directory and none from a bootstrap peer: pass --bootstrap "
        "with a coordinator's address, or start a coordinator first"
    )


def probe_profile(data_dir: Path, sandbox: Sandbox) -> ProviderProfile:
    """The contributor's offer from the hardware probe and the sandbox's layers."""
    from ..probe import run_probe

    report = run_probe(data_dir, benchmark=True)
    cpus = sandbox.config.worker_cpus
    return profile_from_report(report, sandbox.layers_in_use(), cpus=len(cpus) if cpus else None)


def profile_from_report(
    report: ProbeReport, layers: Iterable[str], *, cpus: int | None = None
) -> ProviderProfile:
    """What a probe report lets a contributor offer: ONNX on the execution providers that
    really worked (CPU, and CUDA when a GPU is present and its provider ran), TorchScript
    when torch is installed, and the GPUs NVML found."""
    from sandbox import determinism_class

    memory = report.memory.cgroup_limit_bytes or report.memory.total_bytes
    usable = ("CPUExecutionProvider", "CUDAExecutionProvider")
    eps = tuple(p for p in report.onnxruntime.working_providers if p in usable)
    gpus: tuple[protocol.GpuInfo, ...] = ()
    if report.gpu.available:
        gpus = tuple(
            protocol.GpuInfo(
                name=d.name[:128],
                memory_mb=d.memory_total_bytes >> 20,
                cuda_capability=d.cuda_capability[:16],
            )
            for d in report.gpu.devices[:16]
        )
    else:  # a CUDA provider without a GPU that NVML sees is not offered
        eps = tuple(p for p in eps if p != "CUDAExecutionProvider")
    runtimes = ("onnx", "torchscript") if report.torch.installed else ("onnx",)
    return ProviderProfile(
        determinism_class=determinism_class("onnx", "cpu", "extended"),
        memory_mb=max(1, memory // (1 << 20)),
        cpu_cores=min(report.cpu.usable_cores, cpus or report.cpu.usable_cores),
        bench_score=report.benchmark.score if report.benchmark else 1000,
        execution_providers=eps or ("CPUExecutionProvider",),
        runtimes=runtimes,
        gpus=gpus,
        sandbox_layers=tuple(layers),
    )


async def _stake_when_funded(node: Node, amount: int) -> None:
    """Stake ``amount`` once the balance allows (a devnet contributor is funded later)."""
    while True:
        if node.ledger.state.account(node.me).stake >= amount:
            return
        if node.ledger.state.balance(node.me) >= amount:
            node.stake(amount)
            return
        await node.ledger.wait_height(node.ledger.state.height + 1)


async def run_daemon(
    data_dir: Path,
    config: NodeConfig,
    *,
    ready: Callable[[RunInfo], None] | None = None,
) -> None:
    """Run a node from ``data_dir`` with ``config`` until SIGINT/SIGTERM."""
    from ..net.libp2p_host import Libp2pConfig, open_libp2p_network

    own_cpus = os.sched_getaffinity(0)
    if "contributor" in config.roles and not set(config.contributor.job_cpus) <= own_cpus:
        raise ConfigError(
            f"contributor.job_cpus {sorted(config.contributor.job_cpus)} includes CPUs this "
            f"daemon may not use; it may use {sorted(own_cpus)}: fix config.toml"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    identity = load_or_create_identity(data_dir)
    key: nacl.signing.SigningKey = identity.signing_key
    roles = set(config.roles)
    genesis = read_genesis(data_dir)
    if genesis is None and "coordinator" in roles:
        genesis = ledger.make_genesis(config.chain_id, [identity.public_key])
        write_genesis(data_dir, genesis)
    net_config = Libp2pConfig(
        chain_id=config.chain_id,
        listen=config.listen,
        bootstrap=config.bootstrap,
        relay_service="coordinator" in roles,
        enable_mdns=config.mdns,
    )
    sandbox: Sandbox | None = None
    store: ledger.StoreThread | None = None
    try:
        async with open_libp2p_network(key, net_config) as net:
            if genesis is None:
                genesis = await fetch_genesis(net, config.bootstrap, config.chain_id)
                write_genesis(data_dir, genesis)
            if genesis.chain_id != config.chain_id:
                raise GenesisUnavailable(
                    f"{genesis_path(data_dir)} is for chain {genesis.chain_id!r}, the "
                    f"configuration says {config.chain_id!r}"
                )
            g = genesis
            store = await trio.to_thread.run_sync(
                lambda: ledger.StoreThread(
                    lambda: ledger.LedgerStore.open(ledger_db_path(data_dir), g)
                )
            )
            profile = None
            if "contributor" in roles:
                c = config.contributor
                # job_cpus were checked at start, the sandbox's only setting that can fail.
                sandbox = Sandbox(
                    SandboxConfig(
                        pool_size=max(1, c.warm_workers, c.max_concurrency),
                        worker_cpus=frozenset(c.job_cpus) or None,
                    )
                )
                sb = sandbox
                if sandbox.stale_cgroups_removed:
                    log.info(
                        "removed %d job cgroups left by a daemon that was killed",
                        sandbox.stale_cgroups_removed,
                    )
                profile = await trio.to_thread.run_sync(lambda: probe_profile(data_dir, sb))
                # A spare worker (layers applied, runtime imported) for the first cold job.
                await trio.to_thread.run_sync(lambda: sb.prepare("onnx", limits=sb.config.limits))
            node = Node(
                key,
                config,
                net,
                genesis,
                store=store,
                sandbox=sandbox,
                profile=profile,
                state_dir=data_dir,
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                url = ""
                router = make_router(node, api_url=lambda: url)
                port = await nursery.start(serve_http, router, config.api_host, config.api_port)
                url = f"http://{config.api_host}:{port}"
                info = RunInfo(
                    pid=os.getpid(),
                    peer_id=identity.peer_id,
                    roles=tuple(sorted(roles)),
                    addresses=tuple(net.addresses()),
                    api_url=url,
                    chain_id=genesis.chain_id,
                    started_ms=time.time_ns() // 1_000_000,
                )
                write_runinfo(data_dir, info)
                if config.contributor.stake and "contributor" in roles:
                    nursery.start_soon(_stake_when_funded, node, config.contributor.stake)
                if ready is not None:
                    ready(info)
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        log.info("stopping")
                        break
                nursery.cancel_scope.cancel()
    finally:
        remove_runinfo(data_dir)
        if sandbox is not None:
            sandbox.close()
        if store is not None:
            store.close()
