"""The ``aimx`` command line. Each command group lives in its own ``_cli_*`` module."""

from __future__ import annotations

from pathlib import Path

import typer

from ._cli_common import DataDirOption
from ._cli_devnet import devnet_app
from ._cli_job import job_app
from ._cli_keys import keys_app
from ._cli_ledger import ledger_app
from ._cli_node import coordinator_app, node_app
from ._cli_sandbox import sandbox_app

app = typer.Typer(
    name="aimx",
    help="AIMatrix Node: contribute compute, submit jobs, inspect the ledger.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(ctx: typer.Context, data_dir: DataDirOption = None) -> None:
    ctx.obj = {"data_dir": Path(data_dir) if data_dir else None}


# Command groups register themselves here (one line each).
app.add_typer(keys_app)
app.add_typer(node_app)
app.add_typer(ledger_app)
app.add_typer(sandbox_app)
app.add_typer(coordinator_app)
app.add_typer(job_app)
app.add_typer(devnet_app)


def main() -> None:
    app()
