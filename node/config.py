"""Node configuration: ``config.toml`` in the data directory, validated with pydantic.

Every field has a default that makes a working local node, so a missing file is fine.
Each setting comes from, lowest first: its default, the file, the environment
(``AIMX_<SECTION>_<KEY>``, e.g. ``AIMX_CONTRIBUTOR_PRICE_FLOOR``) and a command-line
option. specs/config.md lists every key (a test checks it against these models).
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ._errors import ConfigError

Role = Literal["contributor", "requester", "coordinator"]
CONFIG_FILE = "config.toml"
#: Chain ids of devnets (``aimx-devnet`` and ``aimx-devnet-...``): the faucet's default.
DEVNET_CHAIN_ID = "aimx-devnet"


class SettingError(ConfigError):
    """A setting that cannot be changed to the value asked for; ``key`` names it."""

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AvailabilityConfig(_Strict):
    """When a contributor may work (outside it, it bids on nothing)."""

    days: str = Field(
        "",
        max_length=100,
        description="days it may work: 'Mon-Fri', 'Sat,Sun', 'Fri-Mon' (empty: every day)",
    )
    hours: str = Field(
        "",
        max_length=20,
        description="hours it may work on those days, 'HH:MM-HH:MM'; a range past midnight "
        "ends the next day, '18:00-08:00' (empty: all day)",
    )
    time_zone: str = Field(
        "",
        max_length=64,
        description="IANA time zone of days and hours, 'Europe/Berlin' (empty: the machine's)",
    )

    @field_validator("days")
    @classmethod
    def _days(cls, value: str) -> str:
        from .daemon.availability import parse_days

        parse_days(value)
        return value.strip()

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: str) -> str:
        from .daemon.availability import parse_hours

        parse_hours(value)
        return value.strip()

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        value = value.strip()
        if value:
            zone_of(value)
        return value


def zone_of(name: str) -> Any:
    """The ``tzinfo`` of an IANA time zone name; ``""`` is the machine's own zone
    (``/etc/localtime``, UTC without one). Raises ``ValueError`` naming a bad name."""
    import zoneinfo

    try:
        if name:
            return zoneinfo.ZoneInfo(name)
        with open("/etc/localtime", "rb") as f:
            return zoneinfo.ZoneInfo.from_file(f, key="localtime")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        if not name:
            return zoneinfo.ZoneInfo("UTC")
        raise ValueError(
            f"{name!r} is not a known time zone (use a name like Europe/Berlin)"
        ) from None


class PauseOnUseConfig(_Strict):
    """Pausing while the machine's owner uses it (the reason is shown in the status)."""

    gpu: bool = Field(
        True,
        description="pause while another process uses a GPU (NVML's process list; nothing "
        "happens without NVML)",
    )
    cpu_percent: int = Field(
        0,
        ge=0,
        le=100,
        description="pause when other processes use this share of the machine's CPU or more "
        "for busy_s (0: never)",
    )
    busy_s: int = Field(10, ge=0, le=3600, description="how long the CPU share must hold")
    quiet_s: int = Field(60, ge=0, le=86_400, description="resume after this long without such use")
    sample_ms: int = Field(
        2_000, ge=100, le=60_000, description="how often GPU and CPU use are sampled"
    )


class ContributorConfig(_Strict):
    price_floor: int = Field(1_000, ge=0, description="lowest price per replica, micro-credits")
    max_concurrency: int = Field(2, ge=1, le=1024, description="jobs run at once")
    warm_workers: int = Field(2, ge=0, le=64, description="warm sandbox workers kept")
    job_cpus: tuple[Annotated[int, Field(ge=0, le=65535)], ...] = Field(
        (), max_length=4096, description="CPU numbers jobs run on (empty: all of the daemon's)"
    )
    allow_untrusted: bool = Field(
        True, description="run strangers' jobs (refused anyway without a network-blocking layer)"
    )
    base_run_ms: int = Field(200, ge=1, description="estimated run time of a job at score 1000")
    stake: int = Field(0, ge=0, description="credits to stake once funded (bond against cheating)")
    memory_mb: int = Field(
        0, ge=0, description="memory offered to jobs, MiB (0: all the machine has)"
    )
    use_gpu: bool = Field(True, description="offer this machine's GPUs to jobs (false: CPU only)")
    availability: AvailabilityConfig = AvailabilityConfig()
    pause_on_use: PauseOnUseConfig = PauseOnUseConfig()
    on_pause: Literal["finish", "abort"] = Field(
        "finish",
        description="running jobs when the node pauses: finish them, or abort them and hand "
        "them back to their requesters (who reassign them)",
    )
    shutdown_grace_s: int = Field(
        30,
        ge=0,
        le=3600,
        description="on SIGTERM, how long running jobs may finish before they are handed back",
    )


class CoordinatorConfig(_Strict):
    block_interval_ms: int = Field(
        500, ge=50, le=600_000, description="how often the coordinator makes a block"
    )
    faucet_amount: int = Field(100_000_000, ge=0, description="demo credits a faucet mint gives")
    faucet_max: int = Field(1_000_000_000_000, ge=1, description="largest faucet mint")
    faucet: bool | None = Field(
        None, description="serve POST /api/faucet (unset: only on a devnet chain id)"
    )
    faucet_per_minute: int = Field(60, ge=1, le=1_000_000, description="faucet mints a minute")
    faucet_account_per_minute: int = Field(
        5, ge=1, le=1_000_000, description="faucet mints a minute to any one account"
    )
    slash_amount: int = Field(1_000_000, ge=1, description="stake taken from a reported cheat")


class RequesterConfig(_Strict):
    max_price: int = Field(100_000, ge=0, description="default max price per replica")
    max_price_limit: int = Field(
        10_000_000, ge=0, description="highest max price per replica a job through the API may set"
    )
    deadline_ms: int = Field(60_000, ge=1_000, description="default job deadline from submit")
    bid_window_ms: int = Field(500, ge=10, le=60_000, description="how long bids are collected")
    expiry_slack_blocks: int = Field(5, ge=0, description="escrow blocks beyond the deadline")
    job_records: int = Field(
        10_000,
        ge=10,
        le=1_000_000,
        description="jobs the API remembers (with outputs); beyond this the oldest closed "
        "ones are forgotten",
    )
    replication: Literal["fixed", "adaptive"] = Field(
        "fixed",
        description="replicas per job: fixed (the job's redundancy, a probation replica for "
        "newcomers) or adaptive (one replica for a trusted provider, audited; "
        "specs/marketplace.md)",
    )
    trusted_jobs: int = Field(20, ge=1, description="adaptive: settled jobs a trusted provider has")
    trusted_score_permille: int = Field(
        900, ge=0, le=1000, description="adaptive: the ledger score a trusted provider has"
    )
    trusted_stake: int = Field(
        1_000_000, ge=0, description="adaptive: micro-credits a trusted provider has bonded"
    )
    trusted_max_failures: int = Field(
        3, ge=0, description="adaptive: most failure units on a trusted provider's record"
    )
    audit_permille: int = Field(
        50, ge=0, le=1000, description="adaptive: share of a trusted provider's jobs run twice"
    )


class NodeConfig(_Strict):
    chain_id: str = Field(
        "aimx-devnet", min_length=1, max_length=64, description="the network (chain) to join"
    )
    roles: tuple[Role, ...] = Field(
        ("contributor",), description="contributor, requester and/or coordinator"
    )
    listen: tuple[str, ...] = Field(
        ("/ip4/127.0.0.1/tcp/0",), description="libp2p addresses to listen on"
    )
    bootstrap: tuple[str, ...] = Field(
        (),
        description="the network's published bootstrap addresses (a coordinator's, with "
        "/p2p/<peer id>); `aimx node start` without --bootstrap uses these",
    )
    genesis_hash: str = Field(
        "",
        pattern=r"^([0-9a-f]{64})?$",
        description="the chain's genesis hash (hex), which a joining node checks the genesis "
        "its bootstrap peer sends against",
    )
    api_host: str = Field("127.0.0.1", description="the local API's address (loopback)")
    api_port: int = Field(0, ge=0, le=65535, description="the local API's port (0: any free)")
    mdns: bool = Field(False, description="find peers on the local network with mDNS")
    reachability: Literal["unknown", "public", "private"] = Field(
        "unknown",
        description="whether others can dial this node: private (behind a NAT) takes a "
        "relay reservation at each bootstrap peer and advertises the relayed address; a "
        "coordinator is public unless set",
    )
    contributor: ContributorConfig = ContributorConfig()
    coordinator: CoordinatorConfig = CoordinatorConfig()
    requester: RequesterConfig = RequesterConfig()


def is_devnet_chain(chain_id: str) -> bool:
    return chain_id == DEVNET_CHAIN_ID or chain_id.startswith(DEVNET_CHAIN_ID + "-")


def faucet_enabled(config: NodeConfig) -> bool:
    """Whether a coordinator serves the faucet: ``coordinator.faucet`` when set, else
    whether the chain is a devnet."""
    setting = config.coordinator.faucet
    return is_devnet_chain(config.chain_id) if setting is None else setting


#: Where a setting's value came from, lowest precedence first.
Source = Literal["default", "file", "env", "flag"]
#: Settings the API (``PUT /api/config``) and the dashboard may change on a running node;
#: each takes effect at once and is written back to config.toml.
EDITABLE = frozenset(
    {
        "contributor.price_floor",
        "contributor.max_concurrency",
        "contributor.allow_untrusted",
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


def _put(tree: dict[str, Any], key: str, value: Any) -> None:
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


def _read_file(path: Path) -> dict[str, Any]:
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
    raw = _read_file(path)
    sources: dict[str, Source] = {}
    keys = config_keys()
    for key, field in keys.items():
        if _get(raw, key)[0]:
            sources[key] = "file"
        text = env.get(env_var(key))
        if text is not None:
            _put(raw, key, _from_env(text, field))
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
        _put(tree, key, value)
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
    raw = _read_file(path)
    for key, value in changes.items():
        _put(raw, key, list(value) if isinstance(value, tuple) else value)
    text = "# aimx node configuration (specs/config.md lists every key)\n" + to_toml(raw)
    tmp = path.with_name(CONFIG_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are TOML's
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} to config.toml")


def to_toml(tree: Mapping[str, Any], prefix: str = "") -> str:
    """``tree`` (settings, tables of settings) as TOML text."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in tree.items() if not isinstance(v, Mapping)]
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out += f"\n[{prefix}{k}]\n" + to_toml(v, f"{prefix}{k}.").lstrip("\n")
    return out


def _type_text(field: Any) -> str:
    kind = field.annotation
    text = kind.__name__ if isinstance(kind, type) else str(kind)
    text = text.replace("typing.", "")
    if "Annotated[int" in text:
        text = "tuple[int, ...]"
    bounds = []
    for m in field.metadata:
        for attr, sign in (
            ("ge", "≥"),
            ("le", "≤"),
            ("min_length", "len ≥"),
            ("max_length", "len ≤"),
        ):
            value = getattr(m, attr, None)
            if value is not None:
                bounds.append(f"{sign} {value}")
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def _default_text(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, tuple):
        value = list(value)
    return f"`{_toml_value(value)}`"


#: The lines of specs/config.md between which :func:`config_doc`'s table stands.
DOC_BEGIN = "<!-- generated by `python -m node.config`: do not edit below -->"
DOC_END = "<!-- end of generated settings -->"


def config_doc() -> str:
    """The table of every setting for specs/config.md (checked by tests/node/test_config)."""
    lines = [
        DOC_BEGIN,
        "",
        "| key | type | default | environment | API | description |",
        "|---|---|---|---|---|---|",
    ]
    for key, field in config_keys().items():
        cells = [
            f"`{key}`",
            _type_text(field).replace("|", "or"),
            _default_text(field.default),
            f"`{env_var(key)}`",
            "editable" if key in EDITABLE else "",
            field.description or "",
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", DOC_END]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m node.config [specs/config.md]: print or rewrite it
    import sys

    if len(sys.argv) < 2:
        print(config_doc())
    else:
        doc = Path(sys.argv[1])
        text = doc.read_text()
        head, _, rest = text.partition(DOC_BEGIN)
        _, _, tail = rest.partition(DOC_END)
        doc.write_text(head + config_doc() + tail)
