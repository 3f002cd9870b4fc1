"""``aimx job submit|list|status|result``: run a model on the network through a local node.

Exit statuses (specs/daemon.md, "CLI"): 0 done, 1 a user error (the message says what to
fix), 2 the job failed or gave no result in time, 130 interrupted (Ctrl-C; the job keeps
running on the node).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .._errors import NodeError
from ..api import Client
from ._common import DataDirOption, JsonOption, command_group, resolve_data_dir, user_errors

job_app = command_group(
    "job",
    "Submit jobs to the network through this node, follow them, fetch their results.",
)

CREDIT = 1_000_000
#: Exit statuses beyond 0 and 1 (a user error, ``user_errors``).
EXIT_JOB_FAILED = 2
#: The job ended unverified: its output is shown under its status, for the user to judge
#: (a script's ``aimx job submit --wait && use-output`` took it as verified: round 59).
EXIT_UNVERIFIED = 3
EXIT_INTERRUPTED = 130
MAX_REDUNDANCY = 16

JobIdArgument = Annotated[
    str,
    typer.Argument(help="The job id: 64 hex digits, or a unique prefix of at least 4."),
]


class JobCommandError(NodeError):
    """A job command cannot run as given (bad input file, unknown job)."""


#: The most a tensor holds on the network (``protocol.MAX_BIN_LEN``, as the daemon checks;
#: not imported from the daemon, which would load it for every command).
MAX_TENSOR_BYTES = 1 << 20
#: The most an .npy file's header takes (NumPy pads it to 64-byte multiples; 64 KiB is
#: far above any real one's).
_NPY_HEADER_BYTES = 64 << 10


def parse_inputs(values: list[str]) -> dict[str, np.ndarray[Any, Any]]:
    """``NAME=FILE.npy`` pairs as arrays."""
    out: dict[str, np.ndarray[Any, Any]] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise JobCommandError(f"--input {value!r}: write it as NAME=FILE.npy")
        try:
            size = Path(path).stat().st_size
            if size > MAX_TENSOR_BYTES + _NPY_HEADER_BYTES:  # not read, nor sent, whole
                raise JobCommandError(
                    f"--input {name}: {path} is {size} bytes; a tensor may hold at most "
                    f"{MAX_TENSOR_BYTES} (1 MiB) on the network: split it into several inputs"
                )
            out[name] = np.load(Path(path), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise JobCommandError(f"--input {name}: cannot read {path} as .npy: {exc}") from None
    if not out:
        raise JobCommandError("give at least one --input NAME=FILE.npy")
    return out


def describe(status: dict[str, Any]) -> str:
    last = status["events"][-1] if status["events"] else None
    step = f"{last['event']} {last['detail']}".strip() if last else "submitted"
    return f"{status['status']}: {step}"


def print_status(console: Console, status: dict[str, Any]) -> None:
    console.print(f"job {status['job_id']}", soft_wrap=True)  # whole, not folded
    table = Table(show_header=False)
    table.add_column(style="bold cyan")
    table.add_column(overflow="fold")
    table.add_row("status", status["status"])
    table.add_row("phase", status["phase"])
    if status["reason"]:
        table.add_row("reason", status["reason"])
    table.add_row("escrow", "closed" if status["closed"] else "open")
    for p in status["paid"]:
        table.add_row("paid", f"{p['provider']}  {p['amount'] / CREDIT:.6f} credits")
    if status.get("no_bids"):
        nb = status["no_bids"]
        table.add_row("no bids", ", ".join(f"{r} ×{n}" for r, n in nb["reasons"].items()))
        for advice in nb["advice"]:
            table.add_row("advice", advice)
    if status["output_hash"]:
        table.add_row("output", status["output_hash"])
    console.print(table)


@job_app.command()
def submit(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(help="ONNX (.onnx) or TorchScript (.pt) model file.")],
    input: Annotated[
        list[str], typer.Option("--input", help="NAME=FILE.npy (repeatable).", show_default=False)
    ],
    redundancy: Annotated[int, typer.Option(help="Replicas whose results are compared.")] = 1,
    max_price: Annotated[
        int | None, typer.Option(help="Most paid per replica, micro-credits.", show_default=False)
    ] = None,
    max_retries: Annotated[int, typer.Option(help="Extra replicas allowed on failure.")] = 2,
    deadline: Annotated[float, typer.Option(help="Seconds until results are due.")] = 60.0,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the result.")] = False,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Submit a job; with --wait follow it to its verified result."""
    with user_errors():
        if not 1 <= redundancy <= MAX_REDUNDANCY:
            raise JobCommandError(
                f"--redundancy {redundancy}: give 1 to {MAX_REDUNDANCY} replicas to compare"
            )
        if not model.is_file():
            raise JobCommandError(f"no model file {model}")
        inputs = parse_inputs(input)
        console = Console(stderr=True)
        with Client.for_data_dir(resolve_data_dir(data_dir, ctx)) as client:
            job_id = client.submit(
                model,
                inputs,
                redundancy=redundancy,
                max_price=max_price,
                max_retries=max_retries,
                deadline_s=deadline,
            )
            if not wait:
                if as_json:
                    typer.echo(json.dumps({"job_id": job_id}))
                else:
                    console.print(f"submitted job [bold]{job_id}[/]")
                return
            try:
                with Progress(
                    SpinnerColumn(),
                    TextColumn("{task.description}"),
                    TimeElapsedColumn(),
                    console=console,
                    transient=True,
                    disable=as_json,
                ) as progress:
                    task = progress.add_task(f"job {job_id}", total=None)
                    told: set[str] = set()

                    def update(s: dict[str, Any]) -> None:
                        progress.update(task, description=f"job {job_id} {describe(s)}")
                        for e in [] if s["done"] else s["events"]:
                            # Short of replicas: say so once, above the spinner.
                            if e["event"] == "waiting" and e["detail"] not in told:
                                told.add(e["detail"])
                                if not as_json:
                                    progress.console.print(e["detail"], soft_wrap=True)

                    status = client.wait(job_id, timeout_s=deadline + 30, on_update=update)
            except KeyboardInterrupt:
                console.print(
                    f"job {job_id} keeps running; follow it with aimx job status {job_id}",
                    soft_wrap=True,
                )
                raise typer.Exit(EXIT_INTERRUPTED) from None
            # an unverified output is shown with its status, printed above it
            outputs = (
                client.result(job_id, unverified=True)
                if status["status"] in ("verified", "unverified")
                else {}
            )
        if as_json:
            status["outputs"] = {k: v.tolist() for k, v in outputs.items()}
            typer.echo(json.dumps(status, indent=2, sort_keys=True))
        else:
            out = Console()
            print_status(out, status)
            for name, value in outputs.items():
                out.print(f"[bold]{name}[/] {value.dtype} {list(value.shape)}: {value.tolist()}")
        if not status["done"] or status["status"] == "failed":
            raise typer.Exit(EXIT_JOB_FAILED)
        if status["status"] == "unverified":
            raise typer.Exit(EXIT_UNVERIFIED)


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


@job_app.command("list")
def list_jobs(
    ctx: typer.Context,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the jobs this node submitted (newest last): id, model, status, phase, submitted."""
    with user_errors():
        with Client.for_data_dir(resolve_data_dir(data_dir, ctx)) as client:
            jobs = client.jobs()
        if as_json:
            typer.echo(json.dumps(jobs, indent=2, sort_keys=True))
            return
        if not jobs:
            Console().print("no jobs yet; submit one with aimx job submit MODEL --input NAME=FILE")
            return
        table = Table(title="aimx job list", title_justify="left")
        for column in ("job id", "model", "status", "phase", "submitted"):
            table.add_column(column, no_wrap=column == "job id")
        for job in jobs:
            table.add_row(
                job["job_id"], job["model"], job["status"], job["phase"], _when(job["submitted_ms"])
            )
        Console(width=max(200, Console().width)).print(table)


@job_app.command()
def status(
    ctx: typer.Context,
    job_id: JobIdArgument,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a job's status, payments and reasons."""
    with user_errors():
        with Client.for_data_dir(resolve_data_dir(data_dir, ctx)) as client:
            body = client.job(job_id)
        if as_json:
            typer.echo(json.dumps(body, indent=2, sort_keys=True))
        else:
            print_status(Console(), body)


@job_app.command()
def result(
    ctx: typer.Context,
    job_id: JobIdArgument,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Directory to write NAME.npy files to.", show_default=False),
    ] = None,
    unverified: Annotated[
        bool,
        typer.Option(
            "--unverified",
            help="Take the output of a job whose results no majority or known answer agreed on.",
        ),
    ] = False,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print (or save as .npy) a finished job's verified outputs (an unverified job's with
    --unverified, said on stderr)."""
    with user_errors():
        with Client.for_data_dir(resolve_data_dir(data_dir, ctx)) as client:
            outputs = client.result(job_id, unverified=unverified)
            status = client.job(job_id) if unverified else None
        if status is not None and status["status"] != "verified":
            typer.echo(f"{status['status']}, not verified: {status['reason']}", err=True)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            for name, value in outputs.items():
                np.save(out / f"{name}.npy", value, allow_pickle=False)
        if as_json:
            typer.echo(json.dumps({k: v.tolist() for k, v in outputs.items()}, sort_keys=True))
        else:
            for name, value in outputs.items():
                Console().print(
                    f"[bold]{name}[/] {value.dtype} {list(value.shape)}: {value.tolist()}"
                )
