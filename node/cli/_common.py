"""What every ``aimx`` command shares: command groups, the data directory option and error
reporting."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import platformdirs
import typer
from rich.console import Console

from .._errors import NodeError

DATA_DIR_ENV = "AIMX_DATA_DIR"

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar=DATA_DIR_ENV,
        help="Node data directory (keys, ledger, config). Default: the user data directory.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def command_group(name: str, summary: str) -> typer.Typer:
    """A group of ``aimx`` commands (``aimx NAME ...``); alone, it prints its help."""
    return typer.Typer(name=name, help=summary, no_args_is_help=True)


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("aimatrix-node", appauthor=False))


def resolve_data_dir(value: Path | None, ctx: typer.Context | None = None) -> Path:
    """The data directory: the command's option, else the global one, else the default."""
    if value is None and ctx is not None:
        root = ctx.find_root()
        if isinstance(root.obj, dict) and root.obj.get("data_dir") is not None:
            value = root.obj["data_dir"]
    if value is None and os.environ.get(DATA_DIR_ENV):
        value = Path(os.environ[DATA_DIR_ENV])
    return (value or default_data_dir()).expanduser()


@contextmanager
def user_errors(console: Console | None = None) -> Iterator[None]:
    """Turn our own errors into a one-line message and exit code 1 instead of a traceback."""
    try:
        yield
    except NodeError as exc:
        (console or Console(stderr=True)).print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
