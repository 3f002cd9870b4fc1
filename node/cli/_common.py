"""What every ``aimx`` command shares: command groups, the data directory option and error
reporting."""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import platformdirs
import typer
from rich.console import Console
from rich.markup import escape

from ledger import LedgerError
from sandbox import SandboxError
from scheduler import SchedulerError

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
DebugOption = Annotated[
    bool,
    typer.Option(
        "--debug",
        envvar="AIMX_DEBUG",
        help="Show the full traceback of an error instead of its one-line message.",
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


#: The roots of the errors our packages raise on purpose (each package's ``_errors.py``):
#: their messages say what happened and what to do, so the CLI prints them as they are.
#: ``protocol.ProtocolError`` is not here: raised locally it is a bug (LocalProtocolError).
ON_PURPOSE: tuple[type[Exception], ...] = (NodeError, LedgerError, SandboxError, SchedulerError)


def debug_enabled() -> bool:
    """Whether ``aimx --debug`` (or ``AIMX_DEBUG=1``) asked for tracebacks."""
    try:
        from typer._click.globals import get_current_context  # newer typer vendors click
    except ImportError:  # pragma: no cover - older typer, which depends on click
        from click import get_current_context  # type: ignore[no-redef,import-not-found,unused-ignore]
    ctx = get_current_context(silent=True)
    if ctx is None:
        return False
    root = ctx.find_root()
    return isinstance(root.obj, dict) and bool(root.obj.get("debug"))


def on_purpose(exc: BaseException) -> Exception | None:
    """The error raised on purpose that ``exc`` is or holds (a trio nursery wraps what its
    tasks raise in exception groups), else None."""
    if isinstance(exc, ON_PURPOSE):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = on_purpose(inner)
            if found is not None:
                return found
    return None


def print_error(message: str, console: Console | None = None, label: str = "error") -> None:
    """``error: <message>`` on stderr, not wrapped (a message is one or two lines)."""
    out = console or Console(stderr=True, soft_wrap=True, highlight=False)
    out.print(f"[bold red]{label}:[/] {escape(message)}", soft_wrap=True)


def print_internal_error(exc: BaseException) -> None:
    """``internal error: <type>: <message>; rerun with --debug ...``: a bug, not the user's."""
    leaf = exc
    while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
        leaf = leaf.exceptions[0]
    print_error(
        f"{type(leaf).__name__}: {leaf}; rerun with --debug for the traceback",
        label="internal error",
    )


@contextmanager
def user_errors(console: Console | None = None) -> Iterator[None]:
    """Turn errors raised on purpose (:data:`ON_PURPOSE`, also inside exception groups) into
    ``error: ...`` and exit status 1 instead of a traceback. With ``--debug`` the traceback
    is printed first. Anything else is left to :func:`node.cli.main`, which calls it an
    internal error."""
    try:
        yield
    except Exception as exc:
        error = on_purpose(exc)
        if error is None:
            raise
        if debug_enabled():
            traceback.print_exception(exc)
        print_error(str(error), console)
        raise typer.Exit(1) from None
