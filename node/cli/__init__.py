"""The ``aimx`` command line. Each command group lives in its own module of this package.

Errors (specs/daemon.md, "The CLI"): a command wraps its work in ``user_errors()``, which
prints an error raised on purpose (the roots in ``_common.ON_PURPOSE``) as ``error: ...``
and exits 1; :func:`main` prints anything else as an internal error, also exit 1. With
``--debug`` both show the traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from ._common import (
    DataDirOption,
    DebugOption,
    on_purpose,
    print_error,
    print_internal_error,
)
from .dashboard import dashboard
from .devnet import devnet_app
from .faucet import faucet
from .job import job_app
from .keys import keys_app
from .ledger import ledger_app
from .node import coordinator_app, node_app
from .sandbox import sandbox_app
from .sim import sim_app

app = typer.Typer(
    name="aimx",
    help="AIMatrix Node: contribute compute, submit jobs, inspect the ledger.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(ctx: typer.Context, data_dir: DataDirOption = None, debug: DebugOption = False) -> None:
    # main() passes a dict of its own to learn whether --debug was given.
    if not isinstance(ctx.obj, dict):
        ctx.obj = {}
    ctx.obj.update(data_dir=Path(data_dir) if data_dir else None, debug=debug)


# Command groups register themselves here (one line each).
app.add_typer(keys_app)
app.add_typer(node_app)
app.add_typer(ledger_app)
app.add_typer(sandbox_app)
app.add_typer(coordinator_app)
app.add_typer(job_app)
app.add_typer(devnet_app)
app.add_typer(sim_app)
app.command("faucet")(faucet)
node_app.command("dashboard")(dashboard)


def main() -> None:
    """The ``aimx`` entry point: no traceback for an error, unless ``--debug``; a usage
    error (unknown option, bad value) is a user error too: two lines, exit 1."""
    try:
        from typer._click import exceptions as click_errors  # newer typer vendors click
    except ImportError:  # pragma: no cover - older typer, which depends on click
        from click import exceptions as click_errors  # type: ignore[no-redef,import-not-found,unused-ignore]
    options: dict[str, Any] = {}
    try:
        code = app(prog_name="aimx", obj=options, standalone_mode=False)
    except click_errors.NoArgsIsHelpError as exc:  # ``aimx`` or ``aimx GROUP`` alone: help
        exc.show()
        sys.exit(exc.exit_code)
    except click_errors.UsageError as exc:
        print_error(exc.format_message())
        if exc.ctx is not None:
            print(f"  see: {exc.ctx.command_path} --help", file=sys.stderr)
        sys.exit(1)
    except click_errors.ClickException as exc:
        print_error(exc.format_message())
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:
        if options.get("debug"):
            raise
        error = on_purpose(exc)
        if error is not None:
            print_error(str(error))
        else:
            print_internal_error(exc)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
