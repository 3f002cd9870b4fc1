"""A scenario: the world a simulation runs in, read from a TOML file.

Every field has a default, so a scenario file states only what it changes. Errors name the
key that is wrong (``jobs.rate_per_s: ...``). Times in the file are seconds (``*_s``) or
milliseconds (``*_ms``) as the key says; sizes are MB or kB as the key says.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ._errors import ScenarioError

Fraction01 = Annotated[float, Field(ge=0.0, le=1.0)]
Positive = Annotated[float, Field(gt=0.0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Nodes(_Model):
    """How many nodes of each role."""

    providers: int = Field(950, ge=1, le=2_000_000)
    requesters: int = Field(50, ge=1, le=200_000)
    coordinators: Literal[1] = 1
    #: Micro-credits each provider bonds before time 0 (minted to it, then staked): what a
    #: slash can take, and what adaptive replication's trust asks for. 0: none.
    provider_stake: int = Field(0, ge=0, le=10**15)


class Tier(_Model):
    """A hardware class; providers draw one by ``weight``."""

    name: str
    device: Literal["cpu", "gpu"] = "cpu"
    #: Benchmark score (1000 = the reference machine): run time scales as 1000 / score.
    bench_score: int = Field(1000, ge=1)
    memory_mb: int = Field(8192, ge=1024)
    gpu_memory_mb: int = Field(0, ge=0)
    max_concurrency: int = Field(1, ge=1, le=64)
    weight: float = Field(1.0, gt=0.0)
    #: Link bandwidth of providers of this tier (model and input transfer), Mbit/s.
    bandwidth_mbps: float = Field(100.0, gt=0.0)

    @model_validator(mode="after")
    def _gpu_has_memory(self) -> Tier:
        if self.device == "gpu" and self.gpu_memory_mb < 1024:
            raise ValueError(f"tier {self.name!r}: a gpu tier needs gpu_memory_mb >= 1024")
        return self


def _default_tiers() -> tuple[Tier, ...]:
    return (
        Tier(name="cpu-4c", bench_score=1000, memory_mb=8192, weight=0.6),
        Tier(name="cpu-16c", bench_score=3000, memory_mb=32768, max_concurrency=2, weight=0.3),
        Tier(
            name="gpu-24g",
            device="gpu",
            bench_score=20000,
            memory_mb=32768,
            gpu_memory_mb=24576,
            max_concurrency=2,
            weight=0.1,
            bandwidth_mbps=500.0,
        ),
    )


class Partition(_Model):
    """From ``start_s`` to ``end_s`` the listed regions hear nothing from the others."""

    start_s: float = Field(ge=0.0)
    end_s: float = Field(gt=0.0)
    regions: tuple[str, ...] = Field(min_length=1)


class Network(_Model):
    """Latency from a region matrix with a per-pair draw, loss, NAT, partitions."""

    regions: tuple[str, ...] = ("eu", "us", "asia")
    region_weights: tuple[float, ...] = (0.4, 0.4, 0.2)
    #: One-way base latency between regions, ms (row: sender region, column: receiver).
    latency_ms: tuple[tuple[float, ...], ...] = (
        (15.0, 45.0, 110.0),
        (45.0, 20.0, 90.0),
        (110.0, 90.0, 25.0),
    )
    #: A pair's latency is base * (1 + jitter * u), u uniform in [0, 1), drawn per pair.
    jitter: float = Field(0.5, ge=0.0)
    #: Chance that one message is lost.
    loss: Fraction01 = 0.0
    #: Fraction of providers behind NAT, reachable only through a relay (extra hop).
    nat_fraction: Fraction01 = 0.2
    relay_ms: float = Field(40.0, ge=0.0)
    #: Delay from a block's production to a node acting on it (gossip), ms.
    block_delay_ms: float = Field(150.0, ge=0.0)
    partitions: tuple[Partition, ...] = ()

    @model_validator(mode="after")
    def _shapes(self) -> Network:
        n = len(self.regions)
        if len(self.region_weights) != n:
            raise ValueError(f"region_weights needs {n} entries, one per region")
        if len(self.latency_ms) != n or any(len(row) != n for row in self.latency_ms):
            raise ValueError(f"latency_ms must be a {n}x{n} matrix (one row per region)")
        for p in self.partitions:
            unknown = set(p.regions) - set(self.regions)
            if unknown:
                raise ValueError(f"partitions: unknown regions {sorted(unknown)}")
        return self


class Churn(_Model):
    """Providers come and go: heavy-tailed sessions, offline gaps, a daily cycle."""

    enabled: bool = False
    session: Literal["pareto", "lognormal"] = "pareto"
    session_mean_s: float = Field(3600.0, gt=0.0)
    #: Pareto shape (> 1; smaller is heavier-tailed) or lognormal sigma.
    shape: float = Field(1.5, gt=0.0)
    offline_mean_s: float = Field(900.0, gt=0.0)
    #: Daily availability: offline gaps grow by up to this factor at the day's low point.
    diurnal_amplitude: float = Field(0.0, ge=0.0, le=0.95)
    #: Fraction of providers online at the start.
    initially_online: Fraction01 = 0.9

    @model_validator(mode="after")
    def _pareto_mean(self) -> Churn:
        if self.enabled and self.session == "pareto" and self.shape <= 1.0:
            raise ValueError("shape: a pareto session needs shape > 1 (a finite mean)")
        return self


class Burst(_Model):
    """Extra arrivals at ``rate_per_s`` from ``start_s`` for ``duration_s``."""

    start_s: float = Field(ge=0.0)
    duration_s: float = Field(gt=0.0)
    rate_per_s: float = Field(gt=0.0)


class Jobs(_Model):
    """Job arrivals (Poisson plus bursts) and what each job asks for."""

    rate_per_s: float = Field(1.0, ge=0.0)
    bursts: tuple[Burst, ...] = ()
    #: Distinct models per capability class (providers cache models they fetched).
    models_per_class: int = Field(20, ge=1)
    #: Model sizes are log-uniform in this range, MB.
    model_mb: tuple[float, float] = (1.0, 20.0)
    input_kb: tuple[float, float] = (1.0, 256.0)
    gpu_fraction: Fraction01 = 0.1
    #: A job's min_memory_mb is drawn from these (MB).
    memory_mb: tuple[int, ...] = (2048, 4096)
    redundancy: int = Field(2, ge=1, le=16)
    max_retries: int = Field(2, ge=0, le=64)
    max_price: int = Field(5_000, ge=1)
    bid_window_ms: int = Field(500, ge=1, le=60_000)
    deadline_s: float = Field(120.0, gt=0.0)
    spot_check_permille: int = Field(0, ge=0, le=1000)
    #: Providers the lookup finds for a job's class (the DHT), named in the submission.
    lookup: int = Field(8, ge=0, le=256)
    #: Subscribers a topic message reaches (re-announcements, big lookups).
    topic_reach: int = Field(16, ge=1, le=4096)
    #: A run's duration is the provider's own estimate times a lognormal factor (sigma).
    run_noise: float = Field(0.1, ge=0.0, le=1.0)
    #: When > 0, a run takes this many ms (a measured run of the model on a warm sandbox
    #: worker) instead of the provider's estimate, after its worker's start-up: none on an
    #: idle warm worker of the same requester and model, ``startup_ms`` on the provider's
    #: spare worker, ``worker_start_ms`` for a worker of its own when the spare is not
    #: ready (it is made again that long after it was taken). The noise applies to all.
    run_ms: float = Field(0.0, ge=0.0)
    startup_ms: float = Field(0.0, ge=0.0)
    worker_start_ms: float = Field(0.0, ge=0.0)
    #: A provider's fetch of a model it does not hold costs this much more than the
    #: latency and the transfer (a request on a new stream), ms.
    model_fetch_ms: float = Field(0.0, ge=0.0)
    #: Arrivals end after this many jobs (0: no limit).
    max_jobs: int = Field(0, ge=0)
    #: The requesters' replication policy (``scheduler.RequesterConfig``: ``replication``,
    #: ``probation_stake``, ``trusted_jobs``, ``trusted_score_permille``, ``trusted_stake``,
    #: ``trusted_max_failures``, ``audit_permille``).
    replication: Literal["fixed", "adaptive"] = "fixed"
    #: Micro-credits a provider has bonded to be past probation (with 3 settled jobs); the
    #: daemon's default. Providers that bond less (``nodes.provider_stake``) stay on
    #: probation however many jobs they settle; 0 counts settled jobs alone.
    probation_stake: int = Field(1_000_000, ge=0)
    trusted_jobs: int = Field(20, ge=0)
    trusted_score_permille: int = Field(900, ge=0, le=1000)
    trusted_stake: int = Field(1_000_000, ge=0)
    trusted_max_failures: int = Field(3, ge=0)
    audit_permille: int = Field(50, ge=0, le=1000)

    @model_validator(mode="after")
    def _ranges(self) -> Jobs:
        for key in ("model_mb", "input_kb"):
            lo, hi = getattr(self, key)
            if not 0 < lo <= hi:
                raise ValueError(f"{key}: give [low, high] with 0 < low <= high")
        return self


class Outage(_Model):
    """The coordinator is down from ``start_s`` until ``end_s``."""

    start_s: float = Field(ge=0.0)
    end_s: float = Field(gt=0.0)


class Coordinator(_Model):
    outages: tuple[Outage, ...] = ()
    #: At each of these times the coordinator signs a second, different block at the
    #: height it just produced and sends it to the auditing replica.
    equivocate_at_s: tuple[float, ...] = ()
    #: Stake a slash takes from a provider reported outvoted (at most what it has bonded),
    #: as the daemon's ``[coordinator] slash_amount``.
    slash_amount: int = Field(1_000_000, ge=1)


class Adversaries(_Model):
    """Misbehaving nodes, as fractions of their role (or counts, where said)."""

    #: Providers that return a wrong output with probability ``cheat_rate``.
    cheaters: Fraction01 = 0.0
    cheat_rate: Fraction01 = 1.0
    #: Cheaters share one wrong answer per job (they outvote honest replicas together).
    colluding: bool = False
    #: Providers that win awards and then vanish (go offline) without a result.
    lazy: Fraction01 = 0.0
    lazy_away_s: float = Field(600.0, gt=0.0)
    #: Requesters that neither settle nor send receipts.
    nonpayers: Fraction01 = 0.0
    #: Identities (a count) of one operator: colluding cheaters under fresh keys.
    sybils: int = Field(0, ge=0)
    #: Providers that bid the lowest price on everything and never run what they win.
    spammers: Fraction01 = 0.0

    @model_validator(mode="after")
    def _shares(self) -> Adversaries:
        if self.cheaters + self.lazy + self.spammers > 1.0:
            raise ValueError("cheaters + lazy + spammers must not exceed 1 (all providers)")
        return self


class Scenario(_Model):
    """A whole scenario (see specs/simulator.md for every key)."""

    name: str = "unnamed"
    duration_s: float = Field(600.0, gt=0.0)
    block_ms: int = Field(2000, ge=100)
    #: Width of one row of series.csv, seconds.
    interval_s: float = Field(10.0, gt=0.0)
    #: Cache signature checks by message bytes (labelled in the summary). Off by default.
    verify_cache: bool = False
    #: Arrivals stop this long before the end, so the last jobs can finish.
    drain_s: float = Field(60.0, ge=0.0)
    #: The network's history before the measured period: jobs submitted earlier run like
    #: any other (they build the ledger's records) but the job, latency and compute figures
    #: count only jobs submitted from ``warmup_s`` on (the summary's ``whole_run`` keeps
    #: the figures of every job). 0: everything is measured.
    warmup_s: float = Field(0.0, ge=0.0)
    #: Credits each requester starts with (micro-credits).
    requester_funds: int = Field(10**12, ge=1)
    nodes: Nodes = Nodes()
    tiers: tuple[Tier, ...] = Field(default_factory=_default_tiers, min_length=1)
    network: Network = Network()
    churn: Churn = Churn()
    jobs: Jobs = Jobs()
    coordinator: Coordinator = Coordinator()
    adversaries: Adversaries = Adversaries()

    @model_validator(mode="after")
    def _measured_period(self) -> Scenario:
        if self.warmup_s and self.warmup_s >= self.duration_s - self.drain_s:
            raise ValueError(
                "warmup_s must end before arrivals stop (duration_s - drain_s), "
                "or nothing is measured"
            )
        return self


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def parse_scenario(text: str, *, source: str = "scenario") -> Scenario:
    """A scenario from TOML text; :class:`ScenarioError` names the bad key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML: {exc}") from None
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        msg = first["msg"].removeprefix("Value error, ")
        raise ScenarioError(f"{source}: {_where(first['loc'])}: {msg}{more}") from None


def load_scenario(path: Path) -> Scenario:
    """Read a scenario file; :class:`ScenarioError` if it cannot be read or is invalid."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc.strerror}") from None
    return parse_scenario(text, source=str(path))


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {type(v).__name__}")


def dump_toml(data: dict[str, object], prefix: str = "") -> str:
    """TOML text for a scenario's ``model_dump(mode="json")`` (tables and arrays of tables)."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, object]]] = []
    arrays: list[tuple[str, list[dict[str, object]]]] = []
    for k, v in data.items():
        if isinstance(v, dict):
            tables.append((k, v))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            arrays.append((k, v))
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    for k, v in tables:
        name = f"{prefix}{k}"
        lines += ["", f"[{name}]", dump_toml(v, name + ".").strip("\n")]
    for k, items in arrays:
        name = f"{prefix}{k}"
        for item in items:
            lines += ["", f"[[{name}]]", dump_toml(item, name + ".").strip("\n")]
    return "\n".join(line for line in lines) + "\n"
