"""The ``aimx`` command line. Each command group lives in its own module of this package."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import DataDirOption
from .devnet import devnet_app
from .faucet import faucet
from .job import job_app
from .keys import keys_app
from .ledger import ledger_app
from .node import coordinator_app, node_app
from .sandbox import sandbox_app

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
app.command("faucet")(faucet)


def main() -> None:
    app()
