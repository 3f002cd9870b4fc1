"""Running the node as a service: ``aimx node install-service`` (a systemd user unit) and
the daemon's log formats (text, JSON lines, journald) (specs/daemon.md, "As a service").
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from .._errors import NodeError
from ._common import DataDirOption, resolve_data_dir, user_errors

UNIT_NAME = "aimx-node.service"
LogFormat = Literal["text", "json"]

DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print the unit and where it would go; write nothing.")
]


class ServiceError(NodeError):
    """The service unit cannot be written."""


def _aimx_command() -> list[str]:
    """How the unit starts ``aimx``: the ``aimx`` script next to this Python, else this
    Python running the CLI module."""
    script = Path(sys.executable).parent / "aimx"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-c", "from node.cli import main; main()"]


def unit_path() -> Path:
    """``$XDG_CONFIG_HOME/systemd/user/aimx-node.service`` (``~/.config`` by default)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user" / UNIT_NAME


def unit_text(data_dir: Path, stop_timeout_s: int) -> str:
    """The systemd user unit that runs this node from ``data_dir``: its configuration
    (roles, bootstrap list, ...) is the data directory's config.toml."""
    command = [*_aimx_command(), "node", "start", "--data-dir", str(data_dir)]
    return "\n".join(
        (
            "# written by `aimx node install-service`; run it again to rewrite",
            "[Unit]",
            "Description=AIMatrix Node (peer-to-peer compute marketplace daemon)",
            "Wants=network-online.target",
            "After=network-online.target",
            "",
            "[Service]",
            "Type=exec",
            f"ExecStart={shlex.join(command)}",
            "Environment=PYTHONUNBUFFERED=1",
            # SIGTERM: running jobs finish (contributor.shutdown_grace_s) or are handed back
            "KillSignal=SIGTERM",
            f"TimeoutStopSec={stop_timeout_s}",
            "Restart=on-failure",
            "RestartSec=10",
            "",
            "[Install]",
            "WantedBy=default.target",
            "",
        )
    )


def install_service(
    ctx: typer.Context, data_dir: DataDirOption = None, dry_run: DryRunOption = False
) -> None:
    """Write a systemd user unit that runs this node (prints what it did and what next)."""
    from ..config import load_config

    with user_errors():
        directory = resolve_data_dir(data_dir, ctx).resolve()
        config = load_config(directory)  # a bad config.toml is said now, not at boot
        # a stop takes the grace period plus the hand-back and closing: then SIGKILL
        text = unit_text(directory, config.contributor.shutdown_grace_s + 30)
        path = unit_path()
        if dry_run:
            typer.echo(f"# would write {path}")
            typer.echo(text, nl=False)
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            existed = path.exists()
            tmp = path.with_name(UNIT_NAME + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
        except OSError as exc:
            raise ServiceError(
                f"cannot write {path}: {exc.strerror or exc}; set XDG_CONFIG_HOME to a "
                "directory you can write, or use --dry-run and copy the unit by hand"
            ) from None
        unit = UNIT_NAME.removesuffix(".service")
        typer.echo(f"{'replaced' if existed else 'wrote'} {path}")
        typer.echo(f"  it runs: aimx node start --data-dir {directory}")
        typer.echo(
            f"  start it now and at login: systemctl --user daemon-reload && "
            f"systemctl --user enable --now {unit}"
        )
        typer.echo(f"  its logs: journalctl --user -u {unit} -f")
        typer.echo(f"  keep it running after you log out: loginctl enable-linger {_user()}")


def _user() -> str:
    return os.environ.get("USER") or os.environ.get("LOGNAME") or "$USER"


# --- logs ---------------------------------------------------------------------------


class JsonLines(logging.Formatter):
    """One JSON object a line: ``ts_ms``, ``level``, ``logger``, ``message`` (and ``exc``
    with the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts_ms": int(record.created * 1000),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


#: syslog priorities of logging's levels, for journald's ``<N>`` line prefix.
_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class Journal(logging.Formatter):
    """Lines for journald: ``<priority>logger: message``, no time (journald reads the
    priority from the prefix and stamps the time itself); each line of a traceback gets
    the record's prefix."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        text = f"{record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


def to_journal() -> bool:
    """Whether stderr is journald's stream (systemd sets ``JOURNAL_STREAM`` to its
    ``device:inode``; a child whose stderr was redirected does not match)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(2)
        return bool(value) and (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError):
        return False


def configure_logging(level: int, fmt: LogFormat) -> str:
    """Set the root logger's handler and format; returns the format used (``journal``
    when running as a unit and ``text`` was asked)."""
    handler = logging.StreamHandler(sys.stderr)
    used: str = fmt
    if fmt == "json":
        handler.setFormatter(JsonLines())
    elif to_journal():
        used = "journal"
        handler.setFormatter(Journal())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    return used
