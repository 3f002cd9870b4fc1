"""Changing settings on a running node (the API's ``PUT /api/config``): which may change,
the new configuration validated, and the changes written back to ``config.toml``."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .._errors import ConfigError
from ._load import CONFIG_FILE, config_keys, put_key, read_file
from ._sections import NodeConfig


class SettingError(ConfigError):
    """A setting that cannot be changed to the value asked for; ``key`` names it."""

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


#: Settings the API (``PUT /api/config``) and the dashboard may change on a running node;
#: each takes effect at once and is written back to config.toml.
EDITABLE = frozenset(
    {
        "contributor.price_floor",
        "contributor.max_concurrency",
        "contributor.allow_untrusted",
        "contributor.tolerance_jobs",
        "contributor.memory_mb",
        "contributor.use_gpu",
        "contributor.availability.days",
        "contributor.availability.hours",
        "contributor.availability.time_zone",
        "contributor.pause_on_use.gpu",
        "contributor.pause_on_use.cpu_percent",
        "contributor.pause_on_use.busy_s",
        "contributor.pause_on_use.quiet_s",
        "contributor.pause_on_use.sample_ms",
        "contributor.on_pause",
        "contributor.shutdown_grace_s",
        "requester.max_price",
        "requester.deadline_ms",
        "requester.bid_window_ms",
    }
)


def flatten(changes: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"contributor": {"price_floor": 5}}`` (or already dotted keys) as
    ``{"contributor.price_floor": 5}``; a table of settings that is itself a value (none
    today) would need its own case."""
    flat: dict[str, Any] = {}
    for name, value in changes.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def apply_changes(config: NodeConfig, changes: Mapping[str, Any]) -> NodeConfig:
    """``config`` with ``changes`` (dotted keys, only :data:`EDITABLE` ones), validated.
    Raises :class:`ConfigError` naming the first key that is not editable or not valid."""
    tree = config.model_dump(mode="python")
    for key, value in changes.items():
        if key not in EDITABLE:
            known = "unknown setting" if key not in config_keys() else "not editable here"
            raise SettingError(f"{key}: {known}; editable: {', '.join(sorted(EDITABLE))}", key=key)
        put_key(tree, key, value)
    try:
        return NodeConfig.model_validate(tree)
    except ValidationError as exc:
        e = exc.errors()[0]
        key = ".".join(str(x) for x in e["loc"] if not isinstance(x, int))
        msg = str(e["msg"]).removeprefix("Value error, ")
        raise SettingError(f"{key}: {msg} (got {e['input']!r})", key=key) from None


def write_changes(data_dir: Path, changes: Mapping[str, Any]) -> None:
    """Write ``changes`` (dotted keys, already validated by :func:`apply_changes`) into
    ``data_dir``'s config.toml, keeping its other settings. The file is rewritten whole
    (comments are not kept) and replaced atomically, mode 0600."""
    path = data_dir / CONFIG_FILE
    raw = read_file(path)
    for key, value in changes.items():
        put_key(raw, key, list(value) if isinstance(value, tuple) else value)
    text = "# aimx node configuration (specs/config.md lists every key)\n" + to_toml(raw)
    tmp = path.with_name(CONFIG_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are TOML's
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} to config.toml")


def to_toml(tree: Mapping[str, Any], prefix: str = "") -> str:
    """``tree`` (settings, tables of settings) as TOML text."""
    lines = [f"{k} = {toml_value(v)}" for k, v in tree.items() if not isinstance(v, Mapping)]
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out += f"\n[{prefix}{k}]\n" + to_toml(v, f"{prefix}{k}.").lstrip("\n")
    return out
