"""Reading a node's settings: ``config.toml`` in the data directory, then the environment
(``AIMX_<SECTION>_<KEY>``), then command-line options, validated by the models; an invalid
value is explained naming its key and where it came from."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from .._errors import ConfigError
from ._sections import NodeConfig

CONFIG_FILE = "config.toml"
#: Where a setting's value came from, lowest precedence first.
Source = Literal["default", "file", "env", "flag"]


def _leaves(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            yield from _leaves(kind, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def config_keys() -> dict[str, Any]:
    """Every setting by its dotted key (``contributor.availability.days``), with its
    pydantic field (type, default, description)."""
    return dict(_leaves(NodeConfig))


def env_var(key: str) -> str:
    """The environment variable of a setting: ``AIMX_`` and the dotted key in capitals
    with ``_`` for dots (``contributor.price_floor``: ``AIMX_CONTRIBUTOR_PRICE_FLOOR``)."""
    return "AIMX_" + key.replace(".", "_").upper()


def _get(tree: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def put_key(tree: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = tree
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[last] = value


def _from_env(text: str, field: Any) -> Any:
    """An environment variable's text as the setting wants it: lists are comma-separated,
    the rest is left to the model's own parsing ("1000", "true")."""
    if "tuple" in str(field.annotation):
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}; fix or remove the file") from None


def resolve_config(
    data_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, object] | None = None,
) -> tuple[NodeConfig, dict[str, Source]]:
    """The effective configuration of ``data_dir`` and where each setting came from.

    ``env`` defaults to ``os.environ``; ``flags`` are command-line options by top-level
    key (``None`` values are options not given). An invalid value raises
    :class:`ConfigError` naming the key and where it came from."""
    path = data_dir / CONFIG_FILE
    env = os.environ if env is None else env
    raw = read_file(path)
    sources: dict[str, Source] = {}
    keys = config_keys()
    for key, field in keys.items():
        if _get(raw, key)[0]:
            sources[key] = "file"
        text = env.get(env_var(key))
        if text is not None:
            put_key(raw, key, _from_env(text, field))
            sources[key] = "env"
    for key, value in (flags or {}).items():
        if value is not None:
            raw[key] = value
            sources[key] = "flag"
    try:
        config = NodeConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path, sources)) from None
    return config, {key: sources.get(key, "default") for key in keys}


def _explain(exc: ValidationError, path: Path, sources: Mapping[str, Source]) -> str:
    where = {"file": str(path), "env": "the environment", "flag": "the options"}
    problems = []
    for e in exc.errors():
        key = ".".join(str(x) for x in e["loc"] if not isinstance(x, int))
        origin = sources.get(key, "file")
        at = f"from {env_var(key)}" if origin == "env" else f"in {where[origin]}"
        if e["type"] == "extra_forbidden":
            problems.append(f"{key}: unknown setting ({at})")
            continue
        msg = str(e["msg"]).removeprefix("Value error, ")
        problems.append(f"{key}: {msg} (got {e['input']!r}, {at})")
    return (
        f"invalid configuration: {'; '.join(problems[:3])}"
        f"{f' (and {len(problems) - 3} more)' if len(problems) > 3 else ''}\n"
        "  fix or remove those settings (specs/config.md lists them)"
    )


def load_config(data_dir: Path, **overrides: object) -> NodeConfig:
    """Read ``config.toml`` from ``data_dir`` (if any), then the environment, and apply
    non-None ``overrides`` (command-line options by top-level key)."""
    return resolve_config(data_dir, flags=overrides)[0]
