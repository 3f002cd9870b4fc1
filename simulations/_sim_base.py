"""The simulation's constants, event kinds and records (used by ``_sim`` and the modules
it is split into)."""

from __future__ import annotations

import resource
from dataclasses import dataclass, field
from typing import Any

import nacl.signing

import ledger
import protocol
from protocol import InputRef, Usage, content_hash

CHAIN_ID = "aimx-sim"
CLAIM_WINDOW_BLOCKS = 10
SETTLE_MARGIN_BLOCKS = 2
#: Transactions of one node in flight (signed, not yet in a block) at once.
TX_WINDOW = 16
#: Blocks the coordinator waits for a reported job's escrow to close (the daemon's
#: ``reports.CLOSE_WAIT_BLOCKS``).
REPORT_WAIT_BLOCKS = 30
#: Signed Results a slash carries at most (``ledger.Slash``'s evidence).
SLASH_EVIDENCE = 4
#: A transaction is valid this many blocks (heights stop while the coordinator is down).
TX_LIFETIME_BLOCKS = 200
#: Models a provider keeps cached.
MODEL_CACHE = 8
#: The cyclic garbage collector's thresholds while a run's loop runs.
GC_THRESHOLDS = (50_000, 20, 10)

# Event kinds (indexes into Loop.handlers).
EV_TO_PROVIDER = 0
EV_TO_REQUESTER = 1
EV_TIMER = 2
EV_RUN_DONE = 3
EV_BLOCK = 4
EV_BLOCK_SEEN = 5
EV_ARRIVAL = 6
EV_OFFLINE = 7
EV_ONLINE = 8
EV_TX = 9
EV_SAMPLE = 10
EV_COORD = 11
EV_EQUIVOCATE = 12
EV_BURST = 13

KINDS = ("honest", "cheater", "colluder", "lazy", "sybil", "spammer")
_CHEATING = frozenset({"cheater", "colluder", "sybil"})

_ZERO_USAGE = Usage(cpu_ms=0, wall_ms=0, peak_memory_kb=0, gpu_ms=0)


def output_commitment(data: bytes) -> bytes | None:
    """The simulated sandbox's output commitment (``None``: malformed bytes)."""
    if len(data) < 3:
        return None
    return content_hash(b"aimx-sim/commitment/" + data)


def honest_output(model_hash: bytes, inputs: tuple[InputRef, ...]) -> bytes:
    """What every honest run outputs: a function of the model and the inputs."""
    return b"ok:" + content_hash(model_hash + b"".join(i.hash for i in inputs))


@dataclass(slots=True)
class JobRecord:
    """What the simulator notes about one submitted job (jobs.csv)."""

    job_id: bytes
    requester: int
    submitted_ms: int
    redundancy: int
    price: int
    canary: bool
    finished_ms: int = -1
    outcome: str = "pending"
    reason: str = ""
    replicas: int = 0
    bids: int = 0
    compute_ms: int = 0
    min_run_ms: int = -1
    correct: int = -1
    #: When the requester saw its phases (NotifyUser; -1: never): the escrow in a block,
    #: the first award, the latest delivery, the escrow closed.
    locked_ms: int = -1
    awarded_ms: int = -1
    delivered_ms: int = -1
    closed_ms: int = -1


@dataclass(slots=True)
class ProviderStats:
    won: int = 0
    paid_jobs: int = 0
    earned: int = 0
    refused: int = 0
    delivered: int = 0
    first_wrong_ms: int = -1
    first_won_ms: int = -1
    detected_ms: int = -1
    jobs_before_detection: int = -1
    misbehaved: int = 0


@dataclass(slots=True)
class _TxLane:
    """A node's ledger transactions: the next sequence number it signs, what is signed
    and not yet in a block, and payloads waiting for the window."""

    key: nacl.signing.SigningKey
    next_seq: int = 0
    inflight: dict[int, ledger.Payload] = field(default_factory=dict)
    queued: list[ledger.Payload] = field(default_factory=list)


@dataclass(slots=True)
class _Series:
    rows: list[dict[str, Any]] = field(default_factory=list)


def raw_tag(raw: bytes) -> str:
    """The domain tag of a signed message's wire bytes (cheap: no signature check)."""
    try:
        value = protocol.unpack(raw, check_types=False)
        return str(value[0])
    except (protocol.ProtocolError, IndexError, TypeError):
        return ""


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
