"""Starting a whole node from a data directory: keys, genesis, ledger store, libp2p, sandbox,
the :class:`Node`, the HTTP API and ``node.json`` (specs/daemon.md, "Start-up")."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import signal
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import nacl.signing
import trio

import ledger
from sandbox import JobRunner, Limits, Sandbox, SandboxConfig, set_undumpable

from .._errors import ConfigError
from .._runinfo import LOCK_FILE as LOCK_FILE
from .._runinfo import RunInfo, remove_runinfo, remove_stale_runinfo, write_runinfo
from ..api import load_or_create_token, make_router, serve_http
from ..config import NodeConfig, Source
from ..keystore import load_or_create_identity
from ..ledger import StoreThread, ledger_db_path
from ._errors import DataDirInUse, DataDirUnusable, GenesisUnavailable, LedgerUnusable
from ._node import Node
from ._profile import probe_profile
from .genesis import fetch_genesis, genesis_path, read_genesis, write_genesis
from .market import MAX_MARKET_OUTPUT_BYTES
from .owner_use import MachineSampler

log = logging.getLogger(__name__)

#: The peers this node saw lately, dialled at its next start (node/net/_peer_memory.py).
PEERS_FILE = "peers.json"


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold ``data_dir``'s lock (an ``flock`` on ``node.lock``, 0600, which holds the
    holder's pid) for the block: one daemon per data directory. A second start raises
    :class:`DataDirInUse` naming the holder, before it has touched anything else."""
    path = data_dir / LOCK_FILE
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not os.access(data_dir, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(data_dir))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise DataDirUnusable(
            f"cannot use {data_dir} as the data directory: {exc.strerror or exc}"
            f"{f' ({exc.filename})' if exc.filename else ''}; make it a directory this user "
            "can write, or pass another --data-dir"
        ) from None
    try:
        try:
            _take_lock(fd)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise DataDirInUse(
                f"another node (pid {holder}) is running with data dir {data_dir}; stop it "
                f"first (kill {holder}) or start this one with another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race a starter)


def _take_lock(fd: int) -> None:
    """``flock`` ``fd`` exclusively; held by another, tried again for a second (a CLI
    checking that the daemon runs holds a shared lock of it for a moment: round 77)."""
    for _ in range(20):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            time.sleep(0.05)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def open_ledger(data_dir: Path, genesis: ledger.Genesis) -> StoreThread:
    """Open the data directory's ledger on its thread and check that no stored block was
    altered (``ledger.check_head``: every hash link, the newest blocks' signatures, the
    state root). A store that cannot be used raises :class:`LedgerUnusable` naming the
    commands that check it and move it aside; nothing is written to it."""
    path = ledger_db_path(data_dir)

    def opener() -> ledger.LedgerStore:
        store = ledger.LedgerStore.open(path, genesis)
        try:
            ledger.check_head(store)
        except BaseException:
            store.close()
            raise
        return store

    try:
        return StoreThread(opener)
    except ledger.StoreError as exc:
        raise LedgerUnusable(
            f"the ledger {path} cannot be used: {exc}\n"
            f"  details: aimx ledger verify --data-dir {data_dir}; to move it aside and sync "
            f"the chain again at the next start: aimx ledger reset --data-dir {data_dir}"
        ) from None


async def _stake_when_funded(node: Node, amount: int) -> None:
    """Stake ``amount`` once the balance allows (a devnet contributor is funded later)."""
    while True:
        if node.ledger.state.account(node.me).stake >= amount:
            return
        if node.ledger.state.balance(node.me) >= amount:
            node.stake(amount)
            return
        await node.ledger.wait_height(node.ledger.state.height + 1)


async def _stop(node: Node, signals: AsyncIterator[int]) -> None:
    """The first SIGINT/SIGTERM: stop taking work, let running replicas finish for
    ``contributor.shutdown_grace_s`` and hand the rest back (``Node.drain``); a second
    signal cuts it short."""
    grace = node.config.contributor.shutdown_grace_s
    running = node.provider.active if node.provider is not None else 0
    log.info(
        "stopping%s",
        f": {running} running jobs may finish for {grace} s, then are handed back"
        if running
        else "",
    )
    async with trio.open_nursery() as stopping:

        async def second_signal() -> None:
            async for _ in signals:
                log.info("stopping now: running jobs are handed back")
                stopping.cancel_scope.cancel()

        stopping.start_soon(second_signal)
        handed = await node.drain(grace)
        if handed:
            log.info("handed %d running jobs back to their requesters", handed)
        stopping.cancel_scope.cancel()
    if node.provider is not None and node.provider.active:
        node.hand_back("handed back: the node is shutting down")


async def run_daemon(
    data_dir: Path,
    config: NodeConfig,
    *,
    ready: Callable[[RunInfo], None] | None = None,
    wrap_runner: Callable[[JobRunner], JobRunner] | None = None,
    config_sources: dict[str, Source] | None = None,
) -> None:
    """Run a node from ``data_dir`` with ``config`` until SIGINT/SIGTERM.

    ``wrap_runner`` wraps the sandbox as the contributor's job runner (tests use the
    fakes of ``sandbox.testing`` to make a slow or cheating contributor).

    After the configuration's own check, the data directory's lock is taken first and held
    until the daemon returns: a second daemon on the same directory raises
    :class:`DataDirInUse` and changes nothing."""
    own_cpus = os.sched_getaffinity(0)
    if "contributor" in config.roles and not set(config.contributor.job_cpus) <= own_cpus:
        raise ConfigError(
            f"contributor.job_cpus {sorted(config.contributor.job_cpus)} includes CPUs this "
            f"daemon may not use; it may use {sorted(own_cpus)}: fix config.toml"
        )
    # Everything the daemon creates is its owner's alone: files 0600, directories 0700
    # (the ledger's SQLite files, receipts, node.json, genesis.bin, api.token; specs/daemon.md,
    # "Data directory"). The umask is the process's; it is put back when the daemon returns.
    private_data_dir(data_dir)
    # Not dumpable: a process of this user (a job's worker, when the daemon is not root
    # and its workers run as its user) can no longer open our /proc/<pid>/mem, which its
    # seccomp filter does not cover (review round 80, F2).
    set_undumpable()
    with data_dir_lock(data_dir):
        umask = os.umask(0o077)
        try:
            await _run(
                data_dir, config, ready=ready, wrap_runner=wrap_runner, sources=config_sources
            )
        finally:
            os.umask(umask)


def private_data_dir(data_dir: Path) -> None:
    """Create ``data_dir`` (0700), or make an existing one private. One in a directory
    another user may change, an existing one that is shared (world-writable, or sticky
    like ``/tmp``) or another user's (whoever we are), or a link another user made, is
    refused: the daemon made any directory it was named 0700, ``/tmp`` too, and left its
    key there (review round 69, R69-6); a link could be pointed elsewhere later (round 73,
    F2); a parent's owner could swap it (round 79, F3)."""
    me = os.geteuid()
    why = _parent_unsafe(data_dir, me)
    if why:
        raise _unusable(data_dir, why)
    try:
        try:
            link = os.lstat(data_dir)
            st = data_dir.stat()
        except FileNotFoundError:
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            return
    except OSError as exc:
        raise DataDirUnusable(
            f"cannot use {data_dir} as the data directory: {exc.strerror or exc}; make it a "
            "directory this user can write, or pass another --data-dir"
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise DataDirUnusable(f"{data_dir} is not a directory; pass another --data-dir")
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in (me, 0):
        # another user's link: it could point elsewhere later (review round 73, F2)
        raise _unusable(data_dir, "is a link another user made")
    if st.st_mode & (stat.S_IWOTH | stat.S_ISVTX):
        raise _unusable(data_dir, "is shared with other users")
    if st.st_uid != me:
        # root too: that user could swap the node's key, or link a file root writes to
        # one of root's (review round 77, F2)
        raise _unusable(data_dir, "belongs to another user")
    if stat.S_IMODE(st.st_mode) & 0o077:
        try:
            os.chmod(data_dir, 0o700)
        except OSError as exc:
            log.warning("could not make %s private (mode 0700): %s", data_dir, exc)
        else:
            log.info("made the data directory %s private (mode 0700)", data_dir)


def _unusable(data_dir: Path, why: str) -> DataDirUnusable:
    return DataDirUnusable(
        f"{data_dir} {why}: a node keeps its key and credits there; give --data-dir a "
        "directory of your own (chown it to this user) in a directory only you (or root) "
        "may change"
    )


def _parent_unsafe(data_dir: Path, me: int) -> str:
    """Why a directory above ``data_dir`` lets another user swap it (``""``: none does):
    one of another user's (not root's), or writable by others without the sticky bit.
    The data directory's own checks said nothing of its parents: root told to use a
    subdirectory of another user's directory had it swapped while it ran, and overwrote a
    root-only file through a link (review round 79, F3)."""
    for parent in data_dir.absolute().parents:
        try:
            link = os.lstat(parent)
            st = parent.stat()
        except OSError:
            continue  # not there yet: created by us
        if stat.S_ISLNK(link.st_mode) and link.st_uid not in (me, 0):
            return f"is under {parent}, a link another user made"
        if st.st_uid not in (me, 0):
            return f"is in {parent}, another user's directory"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            return f"is in {parent}, which others may write to"
    return ""


async def _run(
    data_dir: Path,
    config: NodeConfig,
    *,
    ready: Callable[[RunInfo], None] | None,
    wrap_runner: Callable[[JobRunner], JobRunner] | None,
    sources: dict[str, Source] | None = None,
) -> None:
    from ..net import Reachability
    from ..net.libp2p_host import Libp2pConfig, open_libp2p_network

    if remove_stale_runinfo(data_dir):
        log.info("removed the node.json of a daemon that was killed")
    identity = load_or_create_identity(data_dir)
    key: nacl.signing.SigningKey = identity.signing_key
    roles = set(config.roles)
    genesis = read_genesis(data_dir)
    if genesis is not None and config.genesis_hash and genesis.hash().hex() != config.genesis_hash:
        raise GenesisUnavailable(
            f"{genesis_path(data_dir)} has genesis hash {genesis.hash().hex()}, not the "
            f"{config.genesis_hash} asked for: this data directory belongs to another chain"
        )
    if genesis is None and "coordinator" in roles:
        genesis = ledger.make_genesis(
            config.chain_id, [identity.public_key], min_fee=config.coordinator.min_fee
        )
        write_genesis(data_dir, genesis)
    if genesis is None and not (config.bootstrap and config.genesis_hash):
        # Said before the network opens: joining needs both, and a new user has neither.
        raise GenesisUnavailable(
            "this node has no chain yet: pass --bootstrap ADDRESS and --genesis-hash HASH of "
            "a coordinator (it prints both when it starts), or run `aimx coordinator start`"
        )
    net_config = Libp2pConfig(
        chain_id=config.chain_id,
        listen=config.listen,
        bootstrap=config.bootstrap,
        relay_service="coordinator" in roles,
        # a coordinator is the network's bootstrap peer and relay: dialled directly
        reachability=Reachability.PUBLIC
        if config.reachability == "unknown" and "coordinator" in roles
        else Reachability(config.reachability),
        enable_mdns=config.mdns,
        peers_file=data_dir / PEERS_FILE,
    )
    sandbox: Sandbox | None = None
    store: StoreThread | None = None

    def check_chain(genesis: ledger.Genesis) -> None:
        if genesis.chain_id != config.chain_id:
            raise GenesisUnavailable(
                f"{genesis_path(data_dir)} is for chain {genesis.chain_id!r}, the "
                f"configuration says {config.chain_id!r}: pass --chain-id "
                f"{genesis.chain_id} or use another --data-dir"
            )

    try:
        if genesis is not None:
            # The stored ledger is checked before the network opens: a refused start
            # has talked to no one.
            check_chain(genesis)
            g = genesis
            store = await trio.to_thread.run_sync(lambda: open_ledger(data_dir, g))
        async with open_libp2p_network(key, net_config) as net:
            if genesis is None:
                genesis = await fetch_genesis(
                    net, config.bootstrap, config.chain_id, config.genesis_hash
                )
                check_chain(genesis)
                write_genesis(data_dir, genesis)
            if store is None:
                g = genesis
                store = await trio.to_thread.run_sync(lambda: open_ledger(data_dir, g))
            profile = None
            runner: JobRunner | None = None
            if "contributor" in roles:
                c = config.contributor
                # job_cpus were checked at start, the sandbox's only setting that can fail.
                # A run's output is held whole by the daemon: past what a Result carries it
                # is never delivered, and at the sandbox's default 64 MiB a 60 MiB output
                # took 300 MiB of the daemon's memory before it was refused (round 75, F6).
                limits = Limits(output_bytes=MAX_MARKET_OUTPUT_BYTES)
                sandbox = Sandbox(
                    SandboxConfig(
                        pool_size=max(1, c.warm_workers, c.max_concurrency),
                        worker_cpus=frozenset(c.job_cpus) or None,
                        limits=limits,
                    )
                )
                sb = sandbox
                if sandbox.stale_cgroups_removed:
                    log.info(
                        "removed %d job cgroups left by a daemon that was killed",
                        sandbox.stale_cgroups_removed,
                    )
                if sandbox.leftovers_removed:
                    log.info(
                        "removed %d sandbox directories left by a daemon that was killed",
                        sandbox.leftovers_removed,
                    )
                profile = await trio.to_thread.run_sync(lambda: probe_profile(data_dir, sb))
                # A spare worker (layers applied, runtime imported) for the first cold job.
                await trio.to_thread.run_sync(lambda: sb.prepare("onnx", limits=sb.config.limits))
                runner = wrap_runner(sandbox) if wrap_runner is not None else sandbox
            node = Node(
                key,
                config,
                net,
                genesis,
                store=store,
                runner=runner,
                profile=profile,
                state_dir=data_dir,
                use_sampler=MachineSampler() if "contributor" in roles else None,
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                url = ""
                token = load_or_create_token(data_dir)
                router = make_router(
                    node,
                    token=token,
                    api_url=lambda: url,
                    data_dir=data_dir,
                    config_sources=sources,
                )
                try:
                    port = await nursery.start(serve_http, router, config.api_host, config.api_port)
                except OSError as exc:  # taken, or a name that does not resolve
                    raise ConfigError(
                        f"the local API cannot listen on {config.api_host}:{config.api_port}: "
                        f"{exc.strerror or exc}; set api_port in config.toml to a free port "
                        "(0: any) and api_host to a loopback address"
                    ) from None
                url = f"http://{config.api_host}:{port}"
                info = RunInfo(
                    pid=os.getpid(),
                    peer_id=identity.peer_id,
                    roles=tuple(sorted(roles)),
                    addresses=tuple(net.addresses()),
                    api_url=url,
                    chain_id=genesis.chain_id,
                    started_ms=time.time_ns() // 1_000_000,
                    genesis_hash=genesis.hash().hex(),
                )
                if config.contributor.stake and "contributor" in roles:
                    nursery.start_soon(_stake_when_funded, node, config.contributor.stake)
                # the receiver first: a SIGTERM sent as soon as node.json or "node up" is
                # seen (a service manager, a test) must find it, not Python's default
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    write_runinfo(data_dir, info)
                    if ready is not None:
                        ready(info)
                    async for _ in signals:
                        break
                    await _stop(node, signals)
                nursery.cancel_scope.cancel()
    finally:
        remove_runinfo(data_dir)
        if sandbox is not None:
            sandbox.close()
        if store is not None:
            store.close()
