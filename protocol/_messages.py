"""Every message of the job lifecycle, and the ledger transaction envelope.

Field order is the wire order. Money is integer micro-credits, time is integer
milliseconds since the Unix epoch (``*_ms``), ledger expiries are block heights. The full
field-by-field description is specs/messages.md; a test keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal, get_args

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
Outcome = Literal[
    "ok",
    "rejected",
    "timeout",
    "cpu_limit",
    "memory_limit",
    "output_limit",
    "crashed",
    "runtime_error",
]
"""How a run ended (a Result's ``outcome``; specs/sandbox.md says what each means)."""
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)

NoBidReason = Literal[
    "busy",
    "price_below_floor",
    "requirements_unmet",
    "runtime_unsupported",
    "class_not_served",
    "deadline_too_short",
    "untrusted_refused",
    "shutting_down",
]
"""Why a provider does not bid (a NoBid's ``reason``)."""
NOBID_REASONS: tuple[NoBidReason, ...] = get_args(NoBidReason)


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

    name: Annotated[str, Text(max=128), "GPU model name as NVML reports it"]
    memory_mb: Annotated[int, UInt(), "total GPU memory, MiB"]
    cuda_capability: Annotated[str, Text(max=16), "CUDA compute capability, e.g. `8.9`"]


@dataclass(frozen=True, slots=True)
class InputRef(Record):
    """A named input tensor, content addressed."""

    name: Annotated[str, Name, "the model's input name"]
    hash: Annotated[
        bytes, Hash, "content hash of the tensor's canonical bytes (specs/daemon.md, Content)"
    ]
    size: Annotated[int, UInt(), "size of those bytes"]


@dataclass(frozen=True, slots=True)
class Requirements(Record):
    """What a provider must have to run a job."""

    device: Annotated[str, Text(choices=DEVICES), "`cpu` or `gpu`"]
    execution_provider: Annotated[
        str,
        Name,
        "ONNX Runtime execution provider the job needs, e.g. `CPUExecutionProvider`",
    ]
    min_memory_mb: Annotated[int, UInt(), "memory the provider must have free, MiB"]
    capability_class: Annotated[str, Name, "the class the job is announced on (specs/network.md)"]


@dataclass(frozen=True, slots=True)
class VerificationPolicy(Record):
    """How results are checked. Tolerances are integers in parts per 10^9 (no floats)."""

    mode: Annotated[
        str,
        Text(choices=VERIFY_MODES),
        "`exact`: bit for bit within a determinism class; `tolerance`: element-wise",
    ]
    rtol_e9: Annotated[int, UInt(), "relative tolerance × 10^9"]
    atol_e9: Annotated[int, UInt(), "absolute tolerance × 10^9"]
    spot_check_permille: Annotated[
        int,
        UInt(max=1000),
        "share of replicas that the requester checks against a known answer, per mille",
    ]


@dataclass(frozen=True, slots=True)
class Usage(Record):
    """Measured resource usage of one run."""

    cpu_ms: Annotated[int, UInt(), "CPU time of the worker, user + system, ms"]
    wall_ms: Annotated[int, UInt(), "wall-clock time of the run, ms"]
    peak_memory_kb: Annotated[int, UInt(), "peak resident memory of the worker, KiB"]
    gpu_ms: Annotated[int, UInt(), "GPU time, ms (0 without a GPU)"]


# --- signed messages ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Advert(Message):
    """A provider's capability record, stored on the DHT under its key."""

    TAG: ClassVar[str] = "aimx/advert/1"
    SIGNER_FIELD: ClassVar[str | None] = "node_id"

    node_id: Annotated[bytes, Key, "the provider's key"]
    seq: Annotated[
        int, UInt(), "increases with every new record; a higher seq replaces a lower one"
    ]
    addresses: Annotated[
        tuple[str, ...], ListOf(Text(max=256), max=16), "multiaddresses the node listens on"
    ]
    capability_classes: Annotated[
        tuple[str, ...],
        ListOf(Name, max=32, unique=True),
        "classes the node serves (specs/network.md)",
    ]
    runtimes: Annotated[
        tuple[str, ...], ListOf(Text(choices=RUNTIMES), max=4, unique=True), "runtimes it can run"
    ]
    determinism_classes: Annotated[
        tuple[str, ...],
        ListOf(Name, max=16, unique=True),
        "determinism classes of its runtimes (specs/sandbox.md)",
    ]
    cpu_cores: Annotated[int, UInt(max=65535), "usable CPU cores"]
    memory_mb: Annotated[int, UInt(), "total memory, MiB"]
    gpus: Annotated[tuple[GpuInfo, ...], ListOf(Nested(GpuInfo), max=16), "its GPUs"]
    sandbox_layers: Annotated[
        tuple[str, ...],
        ListOf(Name, max=16, unique=True),
        "isolation layers its sandbox has (specs/sandbox.md)",
    ]
    bench_score: Annotated[int, UInt(), "the probe's benchmark score (specs/probe.md)"]
    price_floor: Annotated[int, UInt(), "lowest price it accepts per replica, micro-credits"]
    max_concurrency: Annotated[int, UInt(min=1, max=1024), "jobs it runs at once"]
    issued_ms: Annotated[int, Millis, "when the record was signed"]
    expires_ms: Annotated[int, Millis, "after this the record must not be used"]


@dataclass(frozen=True, slots=True)
class JobSpec(Message):
    """A job as the requester signs and announces it. Its id is the hash of the signed bytes."""

    TAG: ClassVar[str] = "aimx/jobspec/1"
    SIGNER_FIELD: ClassVar[str | None] = "requester"

    requester: Annotated[bytes, Key, "the paying account"]
    nonce: Annotated[bytes, Nonce, "16 random bytes: two otherwise equal jobs get different ids"]
    runtime: Annotated[str, Text(choices=RUNTIMES), "`onnx` or `torchscript`"]
    model_hash: Annotated[bytes, Hash, "content hash of the model file"]
    model_size: Annotated[int, UInt(), "size of the model file in bytes"]
    inputs: Annotated[tuple[InputRef, ...], ListOf(Nested(InputRef), max=64), "the input tensors"]
    requirements: Annotated[Requirements, Nested(Requirements), "what a provider must have"]
    graph_opt_level: Annotated[
        str,
        Text(choices=OPT_LEVELS),
        "ONNX Runtime graph optimization level to pin (`extended` gives bit-identical CPU results)",
    ]
    threads: Annotated[int, UInt(min=1, max=256), "intra-op threads per run"]
    max_price: Annotated[int, UInt(), "most the requester pays per replica, micro-credits"]
    redundancy: Annotated[int, UInt(min=1, max=16), "replicas whose results are compared"]
    max_retries: Annotated[
        int, UInt(max=64), "replacements after a failure, a missed deadline or a disagreement"
    ]
    verification: Annotated[
        VerificationPolicy, Nested(VerificationPolicy), "how results are compared"
    ]
    created_ms: Annotated[int, Millis, "when the job was created"]
    bid_window_ms: Annotated[int, Millis, "how long the requester collects bids after announcing"]
    deadline_ms: Annotated[int, Millis, "results arriving later are not accepted"]
    escrow_expiry_height: Annotated[int, UInt(), "height at which the job's escrow may be refunded"]


@dataclass(frozen=True, slots=True)
class Bid(Message):
    """A provider's offer to run one replica of a job."""

    TAG: ClassVar[str] = "aimx/bid/1"
    SIGNER_FIELD: ClassVar[str | None] = "provider"

    job_id: Annotated[bytes, Hash, "the job"]
    provider: Annotated[bytes, Key, "the bidder"]
    price: Annotated[
        int,
        UInt(min=1),
        "asked price for one replica, micro-credits, at most the job's max_price",
    ]
    est_finish_ms: Annotated[int, Millis, "when it expects to deliver"]
    determinism_class: Annotated[str, Name, "the class its result will be in"]
    bench_score: Annotated[int, UInt(), "its benchmark score"]
    expires_ms: Annotated[int, Millis, "the bid is void after this"]


@dataclass(frozen=True, slots=True)
class NoBid(Message):
    """A provider's reason for not bidding, so a requester with no bids learns why."""

    TAG: ClassVar[str] = "aimx/nobid/1"
    SIGNER_FIELD: ClassVar[str | None] = "provider"

    job_id: Annotated[bytes, Hash, "the job"]
    provider: Annotated[bytes, Key, "the provider declining"]
    reason: Annotated[str, Text(choices=NOBID_REASONS), "why it does not bid"]
    detail: Annotated[str, Detail, "human-readable detail"]
    price_floor: Annotated[
        int, UInt(), "its floor price, so a requester can see by how much it was short"
    ]


@dataclass(frozen=True, slots=True)
class Award(Message):
    """The requester's award of one replica of a job to one provider."""

    TAG: ClassVar[str] = "aimx/award/1"
    SIGNER_FIELD: ClassVar[str | None] = "requester"

    job_id: Annotated[bytes, Hash, "the job"]
    requester: Annotated[bytes, Key, "the job's requester"]
    provider: Annotated[bytes, Key, "the awarded provider"]
    replica: Annotated[
        int, UInt(max=255), "replica index, 0-based; a replacement gets a fresh index"
    ]
    price: Annotated[int, UInt(min=1), "the agreed price (the bid's)"]
    deadline_ms: Annotated[int, Millis, "the result must arrive before this"]
    bid_hash: Annotated[bytes, Hash, "message id of the accepted Bid"]


@dataclass(frozen=True, slots=True)
class Result(Message):
    """A provider's signed result: output commitment, outcome and measured usage.

    Sent with the output sealed under a one-time key (``output_hash`` is the sealed blob's
    hash, ``key_hash`` the key's): the requester holds the bytes before it signs a Receipt,
    and can read them once the key comes, in an Unseal or in the provider's claim.
    """

    TAG: ClassVar[str] = "aimx/result/2"
    SIGNER_FIELD: ClassVar[str | None] = "provider"

    job_id: Annotated[bytes, Hash, "the job"]
    provider: Annotated[bytes, Key, "the provider that ran it"]
    replica: Annotated[int, UInt(max=255), "the awarded replica index"]
    outcome: Annotated[str, Text(choices=OUTCOMES), "outcome kind (specs/sandbox.md)"]
    message: Annotated[str, Detail, "detail for a failed outcome"]
    output_commitment: Annotated[
        bytes, Hash, "commitment over the output tensors (specs/sandbox.md)"
    ]
    output_hash: Annotated[
        bytes, Hash, "content hash of the sealed output blob as transferred (`seal`)"
    ]
    output_size: Annotated[int, UInt(), "size of that blob"]
    key_hash: Annotated[
        bytes, Hash, "content hash of the one-time key that unseals the blob (zeros without one)"
    ]
    determinism_class: Annotated[str, Name, "class the run was in"]
    usage: Annotated[Usage, Nested(Usage), "measured usage"]
    finished_ms: Annotated[int, Millis, "when the run finished"]


@dataclass(frozen=True, slots=True)
class Receipt(Message):
    """The requester's acknowledgement of a provider's result and its sealed output bytes.

    Signed once the sealed bytes arrived (specs/marketplace.md, "Fair exchange"). Every
    claim with it reveals the key it names on the ledger. A *sealed* receipt (``at_once``
    1) is for a verified winner: claimable at once, and only in a block at or below
    ``claim_by`` (the requester waits for the key that long, and no longer). A *plain* one
    (``at_once`` 0, ``claim_by`` 0) is for a result the verification must open first
    (tolerance mode): the key comes at once, and the receipt is claimable only in the
    escrow's claim window, if the requester never settles.
    """

    TAG: ClassVar[str] = "aimx/receipt/3"
    SIGNER_FIELD: ClassVar[str | None] = "requester"

    job_id: Annotated[bytes, Hash, "the job"]
    requester: Annotated[bytes, Key, "who received the result"]
    provider: Annotated[bytes, Key, "who delivered it"]
    replica: Annotated[int, UInt(max=255), "the replica index"]
    result_hash: Annotated[bytes, Hash, "message id of the provider's signed Result"]
    output_commitment: Annotated[bytes, Hash, "the Result's output commitment"]
    key_hash: Annotated[bytes, Hash, "the Result's key hash: a claim must reveal that key"]
    at_once: Annotated[int, UInt(max=1), "1: claimable at once (sealed); 0: from the claim window"]
    claim_by: Annotated[int, UInt(), "sealed: the last height its claim may land at; plain: 0"]
    received_ms: Annotated[int, Millis, "when it arrived"]

    @property
    def sealed(self) -> bool:
        """Claimable at once (a verified winner's receipt)."""
        return self.at_once == 1


@dataclass(frozen=True, slots=True)
class Unseal(Message):
    """The one-time key that opens the sealed output bytes sent with a Result.

    Sent by the provider once a plain receipt arrives (or once paid by a settle). With a
    sealed receipt the provider's claim reveals the key on the ledger, and no Unseal goes.
    """

    TAG: ClassVar[str] = "aimx/unseal/1"
    SIGNER_FIELD: ClassVar[str | None] = "provider"

    job_id: Annotated[bytes, Hash, "the job"]
    provider: Annotated[bytes, Key, "who sealed the bytes"]
    replica: Annotated[int, UInt(max=255), "the replica index"]
    result_hash: Annotated[bytes, Hash, "message id of the Result whose bytes it opens"]
    key: Annotated[bytes, Bin(32), "the key; its content hash is the Result's `key_hash`"]


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """A running provider's sign of life for one replica."""

    TAG: ClassVar[str] = "aimx/heartbeat/1"
    SIGNER_FIELD: ClassVar[str | None] = "provider"

    job_id: Annotated[bytes, Hash, "the job"]
    provider: Annotated[bytes, Key, "the running provider"]
    replica: Annotated[int, UInt(max=255), "replica index"]
    progress_permille: Annotated[int, UInt(max=1000), "progress estimate, per mille"]
    sent_ms: Annotated[int, Millis, "when it was sent"]


@dataclass(frozen=True, slots=True)
class Transaction(Message):
    """The ledger transaction envelope.

    ``kind`` names the transaction type and ``payload`` holds its canonical msgpack body;
    the ledger (specs/ledger.md) defines each kind's payload and validity rules.
    """

    TAG: ClassVar[str] = "aimx/tx/1"
    SIGNER_FIELD: ClassVar[str | None] = "sender"

    sender: Annotated[bytes, Key, "the signing account"]
    seq: Annotated[
        int,
        UInt(),
        "the sender's next sequence number: each (sender, seq) is applied once "
        "(a claim's may be 2^63-1: unsequenced)",
    ]
    expiry_height: Annotated[int, UInt(), "the transaction is invalid in blocks above this height"]
    fee: Annotated[int, UInt(), "fee paid to the block producer, micro-credits"]
    kind: Annotated[str, Name, "transaction type (specs/ledger.md)"]
    payload: Annotated[bytes, Bin(max=64 * 1024), "canonical encoding of the kind's record"]


ALL_MESSAGES: tuple[type[Message], ...] = (
    Advert,
    JobSpec,
    Bid,
    NoBid,
    Award,
    Result,
    Receipt,
    Unseal,
    Heartbeat,
    Transaction,
)
