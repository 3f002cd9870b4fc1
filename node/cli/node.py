"""``aimx node probe|start|status`` and ``aimx coordinator start``: the daemon's own commands.

``start`` runs the daemon (node/daemon) in the foreground; ``status`` asks a running one
over its local API (specs/api.md). ``coordinator start`` is ``node start --role
coordinator``. A coordinator told to listen on ``tcp/0`` keeps the port it got (in
``listen.json``): its address is the network's bootstrap address, and a restart must not
move it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._errors import NodeError
from ..probe import NOT_COMPUTE, ProbeReport, run_probe
from ._common import DataDirOption, JsonOption, command_group, resolve_data_dir, user_errors
from .config_cmd import node_config, node_pause, node_resume
from .service import configure_logging, install_service

node_app = command_group(
    "node",
    "This node: probe its hardware, run the daemon, see its status.",
)
node_app.command("config")(node_config)
node_app.command("pause")(node_pause)
node_app.command("resume")(node_resume)
node_app.command("install-service")(install_service)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    raise AssertionError("unreachable")


def _no(reason: str | None) -> Text:
    return Text(f"no — {reason}" if reason else "no", style="yellow")


def render(report: ProbeReport) -> Table:
    """The probe as a two-column table for people."""
    table = Table(
        title="aimx node probe", show_header=False, title_justify="left", title_style="bold"
    )
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    cpu = report.cpu
    table.add_row("CPU", f"{cpu.model} ({cpu.architecture})")
    cores = f"{cpu.usable_cores} usable of {cpu.logical_cores}"
    if cpu.quota_millicores is not None:
        cores += f", cgroup quota {cpu.quota_millicores / 1000:g}"
    table.add_row("cores", cores)
    table.add_row("ISA", f"{cpu.isa}  [dim]{' '.join(cpu.flags) or '-'}[/]")
    mem = report.memory
    memory = f"{_size(mem.total_bytes)} total, {_size(mem.available_bytes)} available"
    if mem.cgroup_limit_bytes is not None:
        memory += f", cgroup limit {_size(mem.cgroup_limit_bytes)}"
    table.add_row("memory", memory)
    disk = report.disk
    table.add_row(
        "disk", f"{_size(disk.free_bytes)} free of {_size(disk.total_bytes)} at {disk.path}"
    )
    gpu = report.gpu
    if gpu.devices:
        for d in gpu.devices:
            table.add_row(
                f"GPU {d.index}",
                f"{d.name}, {_size(d.memory_total_bytes)}, CUDA capability {d.cuda_capability}",
            )
        table.add_row("driver", f"{gpu.driver_version} (CUDA {gpu.cuda_driver_version})")
        if gpu.reason:
            table.add_row("GPU notes", Text(gpu.reason, style="yellow"))
    else:
        table.add_row("GPU", _no(gpu.reason))
    ort = report.onnxruntime
    if ort.installed:
        table.add_row("onnxruntime", f"{ort.version}: {', '.join(ort.working_providers) or 'none'}")
        for check in ort.checks:
            if not check.works and check.provider not in NOT_COMPUTE:
                table.add_row("", Text(f"{check.provider}: {check.detail}", style="dim"))
    else:
        table.add_row("onnxruntime", _no(ort.reason))
    torch = report.torch
    if torch.installed:
        cuda = "CUDA build " + torch.cuda_build if torch.cuda_build else "CPU build"
        if torch.imported:
            cuda += ", CUDA works" if torch.cuda_available else ", CUDA not available"
        else:
            cuda += " (run with --torch to check CUDA)"
        table.add_row("torch", f"{torch.version}, {cuda}")
    else:
        table.add_row("torch", _no(torch.reason))
    bench = report.benchmark
    if bench is None:
        table.add_row("benchmark", "skipped")
    elif bench.reason:
        table.add_row("benchmark", _no(bench.reason))
    else:
        table.add_row(
            "score",
            Text.assemble(
                (f"{bench.score:,}", "bold green"),
                f" MFLOP/s ({bench.workload}, median {bench.median_ns / 1e6:.2f} ms of "
                f"{bench.runs} runs, {bench.threads} threads)",
            ),
        )
    table.add_row("determinism", report.determinism_class or "-")
    table.add_row("probe time", f"{report.probe_ms} ms")
    return table


@node_app.command("probe")
def probe(
    ctx: typer.Context,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
    torch: Annotated[
        bool,
        typer.Option("--torch", help="Import torch to check that CUDA works (takes seconds)."),
    ] = False,
    benchmark: Annotated[
        bool, typer.Option("--benchmark/--no-benchmark", help="Time the benchmark workload.")
    ] = True,
) -> None:
    """Probe this machine: CPU, memory, disk, GPUs, runtimes, and a benchmark score."""
    with user_errors():
        report = run_probe(resolve_data_dir(data_dir, ctx), import_torch=torch, benchmark=benchmark)
        if as_json:
            typer.echo(json.dumps(report.to_json(), indent=2))
        else:
            Console().print(render(report))


# --- the daemon: ``aimx node start|status`` and ``aimx coordinator start`` -------------

RoleOption = Annotated[
    list[str] | None,
    typer.Option(
        "--role",
        help="contributor, requester or coordinator; repeat for several. Default: config.",
        show_default=False,
    ),
]
ListenOption = Annotated[
    list[str] | None,
    typer.Option("--listen", help="Multiaddress to listen on (repeatable).", show_default=False),
]
BootstrapOption = Annotated[
    list[str] | None,
    typer.Option(
        "--bootstrap",
        help="A coordinator's multiaddress ending in /p2p/<peer id> (repeatable).",
        show_default=False,
    ),
]
GenesisHashOption = Annotated[
    str | None,
    typer.Option(
        "--genesis-hash",
        help="The chain's genesis hash (hex), as its coordinator prints it: a joining node "
        "takes the genesis its bootstrap peer sends only if the hash matches.",
        show_default=False,
    ),
]
ApiPortOption = Annotated[
    int | None, typer.Option("--api-port", help="Local HTTP API port (0: any free port).")
]
ChainOption = Annotated[str | None, typer.Option("--chain-id", help="Chain to join or start.")]
LogOption = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")]
LogFormatOption = Annotated[
    str,
    typer.Option(
        "--log-format",
        help="text or json (JSON lines); as a systemd unit, text goes to journald's format.",
    ),
]


class NodeCommandError(NodeError):
    """``aimx node start`` cannot start as asked (before the daemon runs)."""


def check_bootstrap(addresses: tuple[str, ...]) -> None:
    """Refuse a bootstrap address that is not ``.../p2p/<peer id>`` before anything starts."""
    from ..net import NetworkError
    from ..net._libp2p_transport import info_of

    for address in addresses:
        try:
            info_of(address)
        except NetworkError as exc:
            raise NodeCommandError(
                f"bad --bootstrap address: {exc}\n"
                "  give a coordinator's address as it prints it at start: "
                "/ip4/HOST/tcp/PORT/p2p/PEER_ID"
            ) from None


#: Where a coordinator remembers the ports its ``tcp/0`` listen addresses got.
LISTEN_FILE = "listen.json"


def _port_of(address: str) -> int | None:
    parts = address.split("/")
    if "tcp" in parts[:-1]:
        value = parts[parts.index("tcp") + 1]
        return int(value) if value.isdigit() else None
    return None


def _host_of(address: str) -> str:
    """``/ip4/H/tcp/P...`` -> ``/ip4/H/tcp/``."""
    head, _, _ = address.partition("/tcp/")
    return f"{head}/tcp/"


def remembered_listen(data_dir: Path, asked: tuple[str, ...]) -> tuple[str, ...]:
    """The listen addresses to use: ``asked``, with each ``tcp/0`` replaced by the port it
    got at the last start (``listen.json``) when the configuration asked the same then.
    A remembered port that another program holds is an error (exit 1): listening
    elsewhere would leave every node dialling the old, remembered address."""
    if not any(_port_of(a) == 0 for a in asked):
        return asked
    path = data_dir / LISTEN_FILE
    try:
        saved = json.loads(path.read_text())
        if saved.get("asked") != list(asked):
            return asked
        listen = tuple(str(a) for a in saved["listen"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return asked
    if len(listen) != len(asked):
        return asked
    for address in listen:
        port, host = _port_of(address), _host_of(address).split("/")
        if not port or len(host) < 3 or host[1] not in ("ip4", "ip6"):
            continue
        family = socket.AF_INET if host[1] == "ip4" else socket.AF_INET6
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host[2], port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or _in_use(data_dir):
                    continue  # the listener, or the data directory's lock, says what is wrong
                raise NodeCommandError(
                    f"this coordinator's port {port} ({address}, kept in {path} since its "
                    "last start: its address is the bootstrap address nodes dial) is taken "
                    "by another program\n  stop that program, or remove the file to listen "
                    "on a new port (the nodes it knew are dialled; give new ones the new "
                    "--bootstrap)"
                ) from None
    return listen


def _in_use(data_dir: Path) -> bool:
    """Whether a daemon holds ``data_dir``'s lock (it holds the port too; its start
    refusal names it)."""
    from ..daemon._run import LOCK_FILE

    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def remember_listen(data_dir: Path, asked: tuple[str, ...], addresses: tuple[str, ...]) -> None:
    """Keep the ports ``asked``'s ``tcp/0`` addresses got (``addresses``: the running
    node's, in the order asked) for :func:`remembered_listen`."""
    if not any(_port_of(a) == 0 for a in asked):
        return
    got = [a.partition("/p2p/")[0] for a in addresses if "/p2p-circuit" not in a]
    listen: list[str] = []
    for address in asked:
        if _port_of(address) != 0:
            listen.append(address)
            continue
        match = next((g for g in got if g.startswith(_host_of(address)) and _port_of(g)), None)
        if match is None:
            return  # not all known: keep nothing rather than half
        got.remove(match)
        listen.append(address.replace("/tcp/0", f"/tcp/{_port_of(match)}", 1))
    path = data_dir / LISTEN_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w") as f:
        json.dump({"asked": list(asked), "listen": listen}, f)
    os.replace(tmp, path)


def run_node(
    ctx: typer.Context,
    data_dir: Path | None,
    roles: list[str] | None,
    listen: list[str] | None,
    bootstrap: list[str] | None,
    api_port: int | None,
    chain_id: str | None,
    log_level: str,
    genesis_hash: str | None = None,
    log_format: str = "text",
) -> None:
    """Run the daemon in the foreground: the data directory's config with these options."""
    import logging

    import trio

    import protocol

    from ..api import TOKEN_FILE
    from ..config import resolve_config
    from ..daemon import run_daemon

    with user_errors():
        directory = resolve_data_dir(data_dir, ctx)
        level = getattr(logging, log_level.upper(), None)
        if not isinstance(level, int):
            raise typer.BadParameter("--log-level must be debug, info, warning or error")
        if log_format not in ("text", "json"):
            raise typer.BadParameter("--log-format must be text or json")
        configure_logging(level, "json" if log_format == "json" else "text")
        # py-libp2p's own info records (dial counts, connector state) are its internals:
        # shown from warning up, and all of them with --log-level debug.
        logging.getLogger("node.net.libp2p").setLevel(max(level, logging.WARNING))
        for role in roles or ():
            if role not in ("contributor", "requester", "coordinator"):
                raise typer.BadParameter(
                    f"unknown role {role!r}: use contributor, requester, coordinator"
                )
        # without --bootstrap: the file's (or AIMX_BOOTSTRAP's) published bootstrap list
        config, sources = resolve_config(
            directory,
            flags={
                "roles": tuple(dict.fromkeys(roles)) if roles else None,
                "listen": tuple(listen) if listen else None,
                "bootstrap": tuple(bootstrap) if bootstrap else None,
                "api_port": api_port,
                "chain_id": chain_id,
                "genesis_hash": genesis_hash.lower() if genesis_hash else None,
            },
        )

        check_bootstrap(config.bootstrap)
        asked = config.listen
        coordinator = "coordinator" in config.roles
        if coordinator:
            config = config.model_copy(update={"listen": remembered_listen(directory, asked)})

        def ready(info: Any) -> None:
            if coordinator:
                try:
                    remember_listen(directory, asked, info.addresses)
                except OSError as exc:
                    logging.getLogger(__name__).warning(
                        "cannot keep the listen port in %s (a restart may move it): %s",
                        directory / LISTEN_FILE,
                        exc,
                    )
            # Not wrapped: the addresses and the hash are copied from here.
            out = Console(stderr=True, soft_wrap=True)
            out.print(
                f"[green]node up[/] {info.peer_id} roles {','.join(info.roles)} api {info.api_url}"
                f" (token in {directory / TOKEN_FILE})"
            )
            for address in info.addresses:
                out.print(f"  listening {address}")
            out.print(f"  genesis hash {info.genesis_hash}")

        # a daemon checks a signature once (a Bid again inside a settle, its own
        # transaction in a block): the cache answers as the check would
        with protocol.verification_cache(True, protocol.DAEMON_GENERATION) as cache:
            try:
                trio.run(lambda: run_daemon(directory, config, ready=ready, config_sources=sources))
            finally:
                if cache is not None and cache.checks:
                    logging.getLogger(__name__).info(
                        "signature checks: %d made, %d answered from the cache",
                        cache.checks,
                        cache.hits,
                    )


@node_app.command("start")
def start(
    ctx: typer.Context,
    role: RoleOption = None,
    listen: ListenOption = None,
    bootstrap: BootstrapOption = None,
    genesis_hash: GenesisHashOption = None,
    api_port: ApiPortOption = None,
    chain_id: ChainOption = None,
    log_level: LogOption = "info",
    log_format: LogFormatOption = "text",
    data_dir: DataDirOption = None,
) -> None:
    """Run the daemon in the foreground until Ctrl-C or SIGTERM (writes node.json while it
    runs). Without --bootstrap it uses config.toml's bootstrap list."""
    run_node(
        ctx,
        data_dir,
        role,
        listen,
        bootstrap,
        api_port,
        chain_id,
        log_level,
        genesis_hash,
        log_format,
    )


@node_app.command("status")
def status(ctx: typer.Context, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Show a running node's identity, ledger height, balance and work."""
    from ..api import Client

    with user_errors():
        with Client.for_data_dir(resolve_data_dir(data_dir, ctx)) as client:
            body = client.status()
        if as_json:
            typer.echo(json.dumps(body, indent=2, sort_keys=True))
            return
        table = Table(title="aimx node status", show_header=False, title_justify="left")
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column(overflow="fold")
        if body.get("fault"):
            fault = f"{body['fault']}; no new work until it clears"
            table.add_row("fault", Text(fault, style="bold red"))
        availability = body.get("availability")
        if availability:
            state = availability["state"]
            if availability.get("reason"):
                state += f" — {availability['reason']}"
            table.add_row("state", Text(state, style="yellow" if availability["paused"] else ""))
        table.add_row("peer id", body["peer_id"])
        table.add_row("roles", ", ".join(body["roles"]))
        table.add_row("chain", f"{body['chain_id']} at height {body['height']}")
        table.add_row("genesis hash", body["genesis_hash"])
        table.add_row("balance", f"{body['balance'] / 1e6:.6f} credits")
        table.add_row("stake", f"{body['stake'] / 1e6:.6f} credits")
        table.add_row("reputation", f"{body['reputation']:.3f}")
        table.add_row("peers", str(body["connected_peers"]))
        if "reachability" in body:
            reach = body["reachability"]
            if body.get("relay"):
                reach += f" through {body['relay']}"
            table.add_row("reachability", reach)
        table.add_row("api", body["api_url"])
        table.add_row("jobs", ", ".join(f"{k} {v}" for k, v in body["jobs"].items()) or "-")
        if "provider" in body:
            p = body["provider"]
            table.add_row("running", str(p["active"]))
            table.add_row("earned", f"{p['earned'] / 1e6:.6f} credits")
        for address in body["addresses"]:
            table.add_row("address", address)
        Console().print(table)


coordinator_app = command_group(
    "coordinator",
    "Run a coordinator: bootstrap peer, relay, block producer and devnet faucet.",
)


@coordinator_app.command("start")
def coordinator_start(
    ctx: typer.Context,
    listen: ListenOption = None,
    api_port: ApiPortOption = None,
    chain_id: ChainOption = None,
    log_level: LogOption = "info",
    log_format: LogFormatOption = "text",
    data_dir: DataDirOption = None,
) -> None:
    """Run a coordinator (creates the chain's genesis with this node's key on first start)."""
    run_node(
        ctx,
        data_dir,
        ["coordinator"],
        listen,
        None,
        api_port,
        chain_id,
        log_level,
        log_format=log_format,
    )
