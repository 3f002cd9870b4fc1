"""Node configuration: ``config.toml`` in the data directory, validated with pydantic.

Every field has a default that makes a working local node, so a missing file is fine.
Command-line options override the file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._errors import ConfigError

Role = Literal["contributor", "requester", "coordinator"]
CONFIG_FILE = "config.toml"
#: Chain ids of devnets (``aimx-devnet`` and ``aimx-devnet-...``): the faucet's default.
DEVNET_CHAIN_ID = "aimx-devnet"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class CoordinatorConfig(_Strict):
    block_interval_ms: int = Field(500, ge=50, le=600_000)
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


class NodeConfig(_Strict):
    chain_id: str = Field("aimx-devnet", min_length=1, max_length=64)
    roles: tuple[Role, ...] = ("contributor",)
    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()
    genesis_hash: str = Field(
        "",
        pattern=r"^([0-9a-f]{64})?$",
        description="the chain's genesis hash (hex), which a joining node checks the genesis "
        "its bootstrap peer sends against",
    )
    api_host: str = "127.0.0.1"
    api_port: int = Field(0, ge=0, le=65535)
    mdns: bool = False
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


def load_config(data_dir: Path, **overrides: object) -> NodeConfig:
    """Read ``config.toml`` from ``data_dir`` (if any) and apply non-None ``overrides``."""
    path = data_dir / CONFIG_FILE
    raw: dict[str, object] = {}
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}; fix or remove the file") from None
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return NodeConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(x) for x in e['loc'])}: "
            + ("unknown setting" if e["type"] == "extra_forbidden" else e["msg"])
            + (f" (got {e['input']!r})" if e["type"] != "extra_forbidden" else "")
            for e in exc.errors()
        ]
        raise ConfigError(
            f"invalid configuration in {path} or the options: {'; '.join(problems[:3])}"
            f"{f' (and {len(problems) - 3} more)' if len(problems) > 3 else ''}\n"
            "  fix or remove those settings (specs/daemon.md, 'Configuration', lists them)"
        ) from None
