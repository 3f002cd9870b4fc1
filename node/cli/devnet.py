"""``aimx devnet``: a whole network on this machine, one process per node, on loopback.

The processes are started and stopped by :mod:`node.devnet`; this command shows them
live, or with ``--demo`` runs one job end to end and checks every ledger.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import user_errors

devnet_app = typer.Typer(
    name="devnet",
    help="Run a coordinator, a workspace and N contributors on this machine (loopback).",
    invoke_without_command=True,
)


@devnet_app.callback()
def devnet(
    nodes: Annotated[int, typer.Option("--nodes", min=1, max=16, help="Contributors.")] = 3,
    demo: Annotated[
        bool, typer.Option("--demo", help="Run one job end to end, check, then exit.")
    ] = False,
    redundancy: Annotated[int, typer.Option(help="The demo job's redundancy.")] = 2,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Devnet directory (one data dir per node). Default: a temporary one.",
            show_default=False,
        ),
    ] = None,
    keep: Annotated[bool, typer.Option(help="Keep a temporary devnet directory.")] = False,
) -> None:
    """Start a local network; with --demo, submit a job, verify it and every ledger."""
    from ._devnet_run import run

    with user_errors():
        ok = run(nodes=nodes, demo=demo, redundancy=redundancy, data_dir=data_dir, keep=keep)
        if not ok:
            raise typer.Exit(1)
