"""``aimx node config``: every setting's effective value and where it came from
(specs/config.md)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ._common import DataDirOption, JsonOption, resolve_data_dir, user_errors

_STYLE = {"default": "dim", "file": "green", "env": "yellow", "flag": "cyan"}

DescribeOption = Annotated[bool, typer.Option("--describe", help="Add each setting's description.")]


def effective_settings(data_dir: Any) -> dict[str, dict[str, Any]]:
    """``{key: {"value", "source", "env"}}`` for the data directory's configuration and
    this process's environment."""
    from ..config import config_keys, env_var, resolve_config

    config, sources = resolve_config(data_dir)
    tree = config.model_dump(mode="json")
    out: dict[str, dict[str, Any]] = {}
    for key, field in config_keys().items():
        value: Any = tree
        for part in key.split("."):
            value = value[part]
        out[key] = {
            "value": value,
            "source": sources[key],
            "env": env_var(key),
            "description": field.description or "",
        }
    return out


def node_config(
    ctx: typer.Context,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
    describe: DescribeOption = False,
) -> None:
    """Show every setting's effective value and its source (default, file, env, flag)."""
    from ..config import CONFIG_FILE

    with user_errors():
        directory = resolve_data_dir(data_dir, ctx)
        settings = effective_settings(directory)
        if as_json:
            typer.echo(json.dumps(settings, indent=2))
            return
        table = Table(
            title=f"aimx node config ({directory / CONFIG_FILE})",
            title_justify="left",
            title_style="bold",
        )
        table.add_column("setting", style="bold cyan", no_wrap=True)
        table.add_column("value", overflow="fold")
        table.add_column("source", no_wrap=True)
        if describe:
            table.add_column("description", style="dim", overflow="fold")
        for key, s in settings.items():
            value = s["value"]
            shown = json.dumps(value) if not isinstance(value, str) else repr(value)
            source = Text(s["source"], style=_STYLE[s["source"]])
            if s["source"] == "env":
                source.append(f" {s['env']}", style="dim")
            row: list[Any] = [key, shown, source]
            if describe:
                row.append(s["description"])
            table.add_row(*row)
        Console(soft_wrap=True).print(table)


def _show(availability: dict[str, Any]) -> None:
    state = availability["state"]
    if availability.get("reason"):
        state += f": {availability['reason']}"
    typer.echo(state)


def node_pause(
    ctx: typer.Context,
    reason: Annotated[str, typer.Argument(help="Why (shown in the status).")] = "",
    data_dir: DataDirOption = None,
) -> None:
    """Pause this contributor: it stops bidding (running jobs follow contributor.on_pause)."""
    from ..api import Client

    with user_errors(), Client.for_data_dir(resolve_data_dir(data_dir, ctx)) as client:
        _show(client.pause(reason))


def node_resume(ctx: typer.Context, data_dir: DataDirOption = None) -> None:
    """Lift the owner's pause (a schedule or pause-on-use may still hold the node)."""
    from ..api import Client

    with user_errors(), Client.for_data_dir(resolve_data_dir(data_dir, ctx)) as client:
        _show(client.resume())
