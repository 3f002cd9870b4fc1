"""Every message of the job lifecycle, and the ledger transaction envelope.

Field order is the wire order. Money is integer micro-credits, time is integer
milliseconds since the Unix epoch (``*_ms``), ledger expiries are block heights. The full
field-by-field description is specs/messages.md; a test keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from ._schema import Bin, ListOf, Nested, Record, Text, UInt

Hash = Bin(32)
Key = Bin(32)
Nonce = Bin(16)
Name = Text(max=128, pattern=r"[A-Za-z0-9_.:/\-]{1,128}")
Detail = Text(max=1024)
Millis = UInt()

RUNTIMES = ("onnx", "torchscript")
DEVICES = ("cpu", "gpu")
OPT_LEVELS = ("disabled", "basic", "extended", "all")
VERIFY_MODES = ("exact", "tolerance")
OUTCOMES = (
    "ok",
    "rejected",
    "timeout",
    "cpu_limit",
    "memory_limit",
    "output_limit",
    "crashed",
    "runtime_error",
)
NOBID_REASONS = (
    "busy",
    "price_below_floor",
    "requirements_unmet",
    "runtime_unsupported",
    "class_not_served",
    "deadline_too_short",
    "untrusted_refused",
    "shutting_down",
)


class Message(Record):
    """A message that can be signed: it has a domain tag naming its type and version."""

    __slots__ = ()
    #: Domain tag: type and version. A signature over one tag never verifies as another.
    TAG: ClassVar[str]
    #: Name of the field that must equal the signer's key, if any.
    SIGNER_FIELD: ClassVar[str | None] = None


# --- nested records ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpuInfo(Record):
    """One GPU as advertised."""

    name: Annotated[str, Text(max=128)]
    memory_mb: Annotated[int, UInt()]
    cuda_capability: Annotated[str, Text(max=16)]


@dataclass(frozen=True, slots=True)
class InputRef(Record):
    """A named input tensor, content addressed."""

    name: Annotated[str, Name]
    hash: Annotated[bytes, Hash]
    size: Annotated[int, UInt()]


@dataclass(frozen=True, slots=True)
class Requirements(Record):
    """What a provider must have to run a job."""

    device: Annotated[str, Text(choices=DEVICES)]
    execution_provider: Annotated[str, Name]
    min_memory_mb: Annotated[int, UInt()]
    capability_class: Annotated[str, Name]


@dataclass(frozen=True, slots=True)
class VerificationPolicy(Record):
    """How results are checked. Tolerances are integers in parts per 10^9 (no floats)."""

    mode: Annotated[str, Text(choices=VERIFY_MODES)]
    rtol_e9: Annotated[int, UInt()]
    atol_e9: Annotated[int, UInt()]
    spot_check_permille: Annotated[int, UInt(max=1000)]


@dataclass(frozen=True, slots=True)
class Usage(Record):
    """Measured resource usage of one run."""

    cpu_ms: Annotated[int, UInt()]
    wall_ms: Annotated[int, UInt()]
    peak_memory_kb: Annotated[int, UInt()]
    gpu_ms: Annotated[int, UInt()]


# --- signed messages ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Advert(Message):
    """A provider's capability record, stored on the DHT under its key."""

    TAG: ClassVar[str] = "aimx/advert/1"
    SIGNER_FIELD: ClassVar[str | None] = "node_id"

    node_id: Annotated[bytes, Key]
    seq: Annotated[int, UInt()]
    addresses: Annotated[tuple[str, ...], ListOf(Text(max=256), max=16)]
    capability_classes: Annotated[tuple[str, ...], ListOf(Name, max=32, unique=True)]
    runtimes: Annotated[tuple[str, ...], ListOf(Text(choices=RUNTIMES), max=4, unique=True)]
    determinism_classes: Annotated[tuple[str, ...], ListOf(Name, max=16, unique=True)]
    cpu_cores: Annotated[int, UInt(max=65535)]
    memory_mb: Annotated[int, UInt()]
    gpus: Annotated[tuple[GpuInfo, ...], ListOf(Nested(GpuInfo), max=16)]
    sandbox_layers: Annotated[tuple[str, ...], ListOf(Name, max=16, unique=True)]
    bench_score: Annotated[int, UInt()]
    price_floor: Annotated[int, UInt()]
    max_concurrency: Annotated[int, UInt(min=1, max=1024)]
    issued_ms: Annotated[int, Millis]
    expires_ms: Annotated[int, Millis]


@dataclass(frozen=True, slots=True)
class JobSpec(Message):
    """A job as the requester signs and announces it. Its id is the hash of the signed bytes."""

    TAG: ClassVar[str] = "aimx/jobspec/1"
    SIGNER_FIELD: ClassVar[str | None] = "requester"

    requester: Annotated[bytes, Key]
    nonce: Annotated[bytes, Nonce]
    runtime: Annotated[str, Text(choices=RUNTIMES)]
    model_hash: Annotated[bytes, Hash]
    model_size: Annotated[int, UInt()]
    inputs: Annotated[tuple[InputRef, ...], ListOf(Nested(InputRef), max=64)]
    requirements: Annotated[Requirements, Nested(Requirements)]
    graph_opt_level: Annotated[str, Text(choices=OPT_LEVELS)]
    threads: Annotated[int, UInt(min=1, max=256)]
    max_price: Annotated[int, UInt()]
    redundancy: Annotated[int, UInt(min=1, max=16)]
    max_retries: Annotated[int, UInt(max=64)]
    verification: Annotated[VerificationPolicy, Nested(VerificationPolicy)]
    created_ms: Annotated[int, Millis]
    bid_window_ms: Annotated[int, Millis]
    deadline_ms: Annotated[int, Millis]
    escrow_expiry_height: Annotated[int, UInt()]


@dataclass(frozen=True, slots=True)
class Bid(Message):
    """A provider's offer to run one replica of a job."""

    TAG: ClassVar[str] = "aimx/bid/1"
    SIGNER_FIELD: ClassVar[str | None] = "provider"

    job_id: Annotated[bytes, Hash]
    provider: Annotated[bytes, Key]
    price: Annotated[int, UInt()]
    est_finish_ms: Annotated[int, Millis]
    determinism_class: Annotated[str, Name]
    bench_score: Annotated[int, UInt()]
    expires_ms: Annotated[int, Millis]


@dataclass(frozen=True, slots=True)
class NoBid(Message):
    """A provider's reason for not bidding, so a requester with no bids learns why."""

    TAG: ClassVar[str] = "aimx/nobid/1"
    SIGNER_FIELD: ClassVar[str | None] = "provider"

    job_id: Annotated[bytes, Hash]
    provider: Annotated[bytes, Key]
    reason: Annotated[str, Text(choices=NOBID_REASONS)]
    detail: Annotated[str, Detail]
    price_floor: Annotated[int, UInt()]


@dataclass(frozen=True, slots=True)
class Award(Message):
    """The requester's award of one replica of a job to one provider."""

    TAG: ClassVar[str] = "aimx/award/1"
    SIGNER_FIELD: ClassVar[str | None] = "requester"

    job_id: Annotated[bytes, Hash]
    requester: Annotated[bytes, Key]
    provider: Annotated[bytes, Key]
    replica: Annotated[int, UInt(max=255)]
    price: Annotated[int, UInt()]
    deadline_ms: Annotated[int, Millis]
    bid_hash: Annotated[bytes, Hash]


@dataclass(frozen=True, slots=True)
class Result(Message):
    """A provider's signed result: output commitment, outcome and measured usage."""

    TAG: ClassVar[str] = "aimx/result/1"
    SIGNER_FIELD: ClassVar[str | None] = "provider"

    job_id: Annotated[bytes, Hash]
    provider: Annotated[bytes, Key]
    replica: Annotated[int, UInt(max=255)]
    outcome: Annotated[str, Text(choices=OUTCOMES)]
    message: Annotated[str, Detail]
    output_commitment: Annotated[bytes, Hash]
    output_hash: Annotated[bytes, Hash]
    output_size: Annotated[int, UInt()]
    determinism_class: Annotated[str, Name]
    usage: Annotated[Usage, Nested(Usage)]
    finished_ms: Annotated[int, Millis]


@dataclass(frozen=True, slots=True)
class Receipt(Message):
    """The requester's acknowledgement that a result was delivered.

    Signed by the requester when the output bytes arrive and match ``output_hash``, before
    verification; a provider holding it can claim payment after the deadline even if the
    requester goes silent.
    """

    TAG: ClassVar[str] = "aimx/receipt/1"
    SIGNER_FIELD: ClassVar[str | None] = "requester"

    job_id: Annotated[bytes, Hash]
    requester: Annotated[bytes, Key]
    provider: Annotated[bytes, Key]
    replica: Annotated[int, UInt(max=255)]
    result_hash: Annotated[bytes, Hash]
    output_commitment: Annotated[bytes, Hash]
    received_ms: Annotated[int, Millis]


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """A running provider's sign of life for one replica."""

    TAG: ClassVar[str] = "aimx/heartbeat/1"
    SIGNER_FIELD: ClassVar[str | None] = "provider"

    job_id: Annotated[bytes, Hash]
    provider: Annotated[bytes, Key]
    replica: Annotated[int, UInt(max=255)]
    progress_permille: Annotated[int, UInt(max=1000)]
    sent_ms: Annotated[int, Millis]


@dataclass(frozen=True, slots=True)
class Transaction(Message):
    """The ledger transaction envelope.

    ``kind`` names the transaction type and ``payload`` holds its canonical msgpack body;
    the ledger (specs/ledger.md) defines each kind's payload and validity rules.
    """

    TAG: ClassVar[str] = "aimx/tx/1"
    SIGNER_FIELD: ClassVar[str | None] = "sender"

    sender: Annotated[bytes, Key]
    seq: Annotated[int, UInt()]
    expiry_height: Annotated[int, UInt()]
    fee: Annotated[int, UInt()]
    kind: Annotated[str, Name]
    payload: Annotated[bytes, Bin(max=64 * 1024)]


ALL_MESSAGES: tuple[type[Message], ...] = (
    Advert,
    JobSpec,
    Bid,
    NoBid,
    Award,
    Result,
    Receipt,
    Heartbeat,
    Transaction,
)
