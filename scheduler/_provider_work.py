"""What a provider tracks of each job it bid on (:class:`Work`, its :class:`WorkPhase`), and
the signed Result it delivers, with the output sealed under its one-time key."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from protocol import (
    Award,
    Bid,
    JobSpec,
    Outcome,
    Receipt,
    Result,
    Signed,
    Usage,
    content_hash,
    key_hash,
    output_key,
    seal_output,
    sign,
)

from ._config import ProviderConfig
from ._effects import Output

_NO_HASH = bytes(32)


class WorkPhase(StrEnum):
    """Where a provider's work on one job is (specs/marketplace.md, "Work phases")."""

    #: Our bid is out; an award may come while it lives.
    BIDDING = "bidding"
    #: Awarded: the sandbox runs the job.
    RUNNING = "running"
    #: The result and the sealed output went to the requester; resent until its receipt
    #: arrives.
    DELIVERED = "delivered"
    #: The requester's plain receipt is held: the key goes (resent until the work ends),
    #: and we wait to be paid, or claim with it in the claim window. A sealed receipt
    #: waits here only until the escrow covers the award.
    RECEIPTED = "receipted"
    #: We claimed our price with the award and the receipt (at once with a sealed one).
    CLAIMED = "claimed"
    #: Finished (``Work.end`` says how); the work is forgotten.
    CLOSED = "closed"


@dataclass(slots=True)
class Work:
    """One job this provider bid on, as it tracks it (read it, do not change it)."""

    job: Signed[JobSpec]
    bid: Signed[Bid]
    #: When the requester's bid window for our latest bid ends, capped at ``MAX_PENDING_MS``
    #: after the bid: until then the bid is pending and counts as load; after it, an award
    #: is still honoured while the bid lives.
    window_end_ms: int = 0
    phase: WorkPhase = WorkPhase.BIDDING
    older: tuple[Signed[Bid], ...] = ()
    award: Signed[Award] | None = None
    started_ms: int = 0
    result: Signed[Result] | None = None
    #: The output, sealed under ``key``: what the result delivers (empty after a failed run).
    sealed: bytes = b""
    key: bytes = b""
    #: The job's escrow was seen covering our award (``scheduler._ledger.uncovered``).
    covered: bool = False
    #: The interval of the next resend (it doubles: the sealed output before the receipt,
    #: the key after a plain one), and when the key last went.
    resend_ms: int = 0
    key_sent_ms: int = 0
    receipt: Signed[Receipt] | None = None
    paid: int = 0
    end: str = ""

    @property
    def spec(self) -> JobSpec:
        return self.job.message

    @property
    def id(self) -> bytes:
        return self.job.id

    @property
    def plain(self) -> bool:
        """We hold a plain receipt (claimable only from the claim window)."""
        return self.receipt is not None and not self.receipt.message.sealed

    @property
    def key_now(self) -> bool:
        """A plain receipt gets our key before we are paid only for a job compared within
        tolerances, whose outputs must be opened before any verdict. In exact mode a
        verified winner gets a sealed receipt: a requester that sends a plain one there
        would read our output and could then settle with other payees."""
        return self.plain and self.spec.verification.mode == "tolerance"


def seal_result(
    work: Work,
    config: ProviderConfig,
    outcome: Outcome,
    output: Output | None,
    usage: Usage,
    message: str,
    now_ms: int,
) -> Signed[Result]:
    """The signed Result of the awarded run of ``work`` (``output`` when ``ok``). An output
    is sealed under its one-time key (kept in ``work``): the Result names the sealed blob
    and the key's hash. Zero hashes and size for any other outcome."""
    assert work.award is not None
    replica = work.award.message.replica
    if output is not None and outcome == "ok":
        work.key = output_key(config.key, work.id, replica, output.commitment)
        work.sealed = seal_output(work.key, output.data)
        commitment, cls = output.commitment, output.determinism_class
    else:
        commitment, cls = _NO_HASH, work.bid.message.determinism_class
    result = Result(
        job_id=work.id,
        provider=bytes(config.key.verify_key),
        replica=replica,
        outcome=outcome,
        message=message[:1024],
        output_commitment=commitment,
        output_hash=content_hash(work.sealed) if work.sealed else _NO_HASH,
        output_size=len(work.sealed),
        key_hash=key_hash(work.key) if work.key else _NO_HASH,
        determinism_class=cls,
        usage=usage,
        finished_ms=now_ms,
    )
    return sign(result, config.key, config.chain_id)
