"""The settings' models: ``NodeConfig`` and its sections (``[contributor]`` with its
``availability`` and ``pause_on_use`` tables, ``[coordinator]``, ``[requester]``), each
field with its default, bounds and description (the source of specs/config.md's table)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["contributor", "requester", "coordinator"]
#: The most any amount setting may be (micro-credits): the ledger's whole supply. Every
#: amount a node puts in a message or a transaction is a u64 there; a price floor of 2^64
#: written through the API killed the daemon at its next advert, and every start after
#: (review round 69, R69-2).
MAX_AMOUNT = 1 << 62
#: The longest run estimate and escrow slack a setting may give (a day; in blocks, the most
#: a provider accepts an escrow's expiry ahead of its height, ``MAX_ESCROW_AHEAD_BLOCKS``).
MAX_RUN_MS = 86_400_000
MAX_SLACK_BLOCKS = 100_000
#: Chain ids of devnets (``aimx-devnet`` and ``aimx-devnet-...``): the faucet's default.
DEVNET_CHAIN_ID = "aimx-devnet"


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
        from ..daemon.availability import parse_days

        parse_days(value)
        return value.strip()

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: str) -> str:
        from ..daemon.availability import parse_hours

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
    price_floor: int = Field(
        1_000, ge=1, le=MAX_AMOUNT, description="lowest price per replica, micro-credits"
    )
    max_concurrency: int = Field(2, ge=1, le=1024, description="jobs run at once")
    warm_workers: int = Field(2, ge=0, le=64, description="warm sandbox workers kept")
    job_cpus: tuple[Annotated[int, Field(ge=0, le=65535)], ...] = Field(
        (), max_length=4096, description="CPU numbers jobs run on (empty: all of the daemon's)"
    )
    allow_untrusted: bool = Field(
        True, description="run strangers' jobs (refused anyway without a network-blocking layer)"
    )
    tolerance_jobs: bool = Field(
        False,
        description="bid on jobs verified within tolerances (their requester reads every "
        "output before it pays, and may pay others); never with both tolerances 0",
    )
    base_run_ms: int = Field(
        200, ge=1, le=MAX_RUN_MS, description="estimated run time of a job at score 1000"
    )
    stake: int = Field(
        0, ge=0, le=MAX_AMOUNT, description="credits to stake once funded (bond against cheating)"
    )
    memory_mb: int = Field(
        0, ge=0, le=1 << 32, description="memory offered to jobs, MiB (0: all the machine has)"
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
    faucet_amount: int = Field(
        100_000_000, ge=0, le=MAX_AMOUNT, description="demo credits a faucet mint gives"
    )
    faucet_max: int = Field(
        1_000_000_000_000, ge=1, le=MAX_AMOUNT, description="largest faucet mint"
    )
    faucet: bool | None = Field(
        None, description="serve POST /api/faucet (unset: only on a devnet chain id)"
    )
    faucet_per_minute: int = Field(60, ge=1, le=1_000_000, description="faucet mints a minute")
    faucet_account_per_minute: int = Field(
        5, ge=1, le=1_000_000, description="faucet mints a minute to any one account"
    )
    slash_amount: int = Field(
        1_000_000, ge=1, le=MAX_AMOUNT, description="stake taken from a reported cheat"
    )
    witness_floor: int = Field(
        1_000_000,
        ge=1,
        le=MAX_AMOUNT,
        description="stake each provider of an outvoting majority must hold for a slash",
    )
    min_fee: int = Field(
        0,
        ge=0,
        le=1_000_000_000,
        description="the least fee of any transaction on a chain this coordinator creates "
        "(written in its genesis at the first start; fixed for the chain's life): above 0, "
        "filling blocks with junk costs its senders",
    )


class RequesterConfig(_Strict):
    max_price: int = Field(
        100_000,
        ge=1,
        le=MAX_AMOUNT,
        description="default max price per replica (at most max_price_limit)",
    )
    max_price_limit: int = Field(
        10_000_000,
        ge=1,
        le=MAX_AMOUNT,
        description="highest max price per replica a job through the API may set",
    )
    #: At most scheduler.MAX_DEADLINE_MS (23 h; providers refuse deadlines over 24 h ahead).
    deadline_ms: int = Field(
        60_000, ge=1_000, le=82_800_000, description="default job deadline from submit (≤ 23 h)"
    )
    bid_window_ms: int = Field(500, ge=10, le=60_000, description="how long bids are collected")
    expiry_slack_blocks: int = Field(
        5, ge=0, le=MAX_SLACK_BLOCKS, description="escrow blocks beyond the deadline"
    )
    job_records: int = Field(
        10_000,
        ge=10,
        le=1_000_000,
        description="jobs the API remembers (outputs kept on disk); beyond this the oldest closed "
        "ones are forgotten",
    )
    replication: Literal["fixed", "adaptive"] = Field(
        "fixed",
        description="replicas per job: fixed (the job's redundancy, a probation replica for "
        "newcomers, audits at redundancy 1) or adaptive (one replica for a trusted provider, "
        "audited; specs/marketplace.md)",
    )
    probation_stake: int = Field(
        1_000_000,
        ge=0,
        le=MAX_AMOUNT,
        description="micro-credits a provider has bonded to be past probation (with 3 "
        "settled jobs, which cost nothing to self-deal); 0: settled jobs alone",
    )
    trusted_jobs: int = Field(
        20, ge=1, le=1 << 32, description="adaptive: settled jobs a trusted provider has"
    )
    trusted_score_permille: int = Field(
        900, ge=0, le=1000, description="adaptive: the ledger score a trusted provider has"
    )
    trusted_stake: int = Field(
        1_000_000,
        ge=0,
        le=MAX_AMOUNT,
        description="adaptive: micro-credits a trusted provider has bonded",
    )
    trusted_max_failures: int = Field(
        3,
        ge=0,
        le=1 << 32,
        description="adaptive: most failure units on a trusted provider's record",
    )
    audit_permille: int = Field(
        50,
        ge=0,
        le=1000,
        description="share of the jobs given to one provider alone that also run on a second "
        "(fixed: redundancy 1 on an established provider; adaptive: a trusted provider's)",
    )
    slash_outvoted: bool = Field(
        True,
        description="report a provider outvoted by a verified majority for a slash (with the "
        "signed Results as evidence); off, it is only attested against",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_max_price_within_limit(cls, data: Any) -> Any:
        # A limit set below the default max_price lowers the default with it.
        if isinstance(data, dict) and "max_price" not in data and "max_price_limit" in data:
            limit = data["max_price_limit"]
            default = cls.model_fields["max_price"].default
            if isinstance(limit, int) and not isinstance(limit, bool) and 1 <= limit < default:
                return {**data, "max_price": limit}
        return data

    @model_validator(mode="after")
    def _max_price_within_limit(self) -> RequesterConfig:
        # A default the node itself refuses to use made every later submit without a
        # max_price fail (review round 69).
        if self.max_price > self.max_price_limit:
            raise ValueError(
                f"max_price {self.max_price} is over max_price_limit {self.max_price_limit}; "
                "lower it or raise the limit"
            )
        return self


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
    tx_fee: int = Field(
        0,
        ge=0,
        le=1_000_000_000,
        description="micro-credits each ledger transaction of this node pays (at least the "
        "chain's min_fee; a claim's comes out of its payout)",
    )
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
