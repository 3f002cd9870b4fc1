"""Configuration of the two machines: plain frozen records, one per machine instance."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import nacl.signing

from protocol import InputRef, JobSpec

from ._effects import Output
from ._ledger import EscrowLookup, no_escrow
from ._pricing import NEWCOMER, Reputation
from ._verification import CommitmentOf, Compare, commitments_equal


def _unknown(_: bytes) -> Reputation:
    return NEWCOMER


def run_key(runtime: str, execution_provider: str, opt_level: str) -> str:
    """How a job is run (runtime, execution provider, graph optimization level): the key
    of :attr:`ProviderConfig.determinism_classes`."""
    return f"{runtime}/{execution_provider}/{opt_level}"


@dataclass(frozen=True, slots=True)
class Canary:
    """A job whose answer the requester already knows, used for spot checks."""

    runtime: str
    model_hash: bytes
    model_size: int
    inputs: tuple[InputRef, ...]
    answer: Output


@dataclass(frozen=True, slots=True)
class RequesterConfig:
    """How a requester runs its jobs.

    ``reputation``, ``compare`` and ``commitment`` are injected pure functions (the ledger
    derives reputation; the sandbox defines output comparison and the output commitment).
    ``compare`` must depend on nothing but the two outputs and the policy: a job remembers
    each pair's answer by the outputs' commitments and classes (``RequesterJob.compared``).
    ``commitment`` has no default: every driver must say how delivered bytes are committed
    to, since a result is only as good as that check. ``rng`` decides spot checks; it is
    per instance, never shared. Times are milliseconds, heights are ledger blocks.
    """

    key: nacl.signing.SigningKey
    chain_id: str
    #: The commitment of delivered output bytes (``None``: the bytes are malformed).
    commitment: CommitmentOf
    reputation: Callable[[bytes], Reputation] = _unknown
    compare: Compare = commitments_equal
    rng: random.Random = field(default_factory=random.Random)
    #: A running replica with no heartbeat or result for this long is replaced.
    heartbeat_timeout_ms: int = 3_500
    #: With no sign of life this long after an award, send it again (twice at most).
    award_resend_ms: int = 1_000
    #: Added to a bid's estimated run time to give the replica's deadline.
    replica_grace_ms: int = 2_000
    #: The ledger accepts receipt claims in the last ``claim_window_blocks`` before expiry.
    claim_window_blocks: int = 10
    #: Settle at the latest this many blocks before the claim window opens.
    settle_margin_blocks: int = 2
    #: A provider is past probation (established: no probation replica beside it, it
    #: closes a bid window early, newcomers never outvote it) with at least
    #: ``probation_jobs`` settled jobs on the ledger and at least ``probation_stake``
    #: micro-credits bonded (``established``). Settled jobs alone cost nothing: two keys of
    #: one person settle jobs to each other at fee 0. The stake is what a known answer or
    #: an honest majority takes (a slash) when it catches the provider; 0 counts settled
    #: jobs alone.
    probation_jobs: int = 3
    probation_stake: int = 1_000_000
    #: Known-answer jobs for spot checks (see ``VerificationPolicy.spot_check_permille``).
    canaries: tuple[Canary, ...] = ()
    #: Also slash (not only attest against) a provider outvoted by a majority. On by
    #: default: refusing a cheater across requesters (adaptive replication's trust) rests
    #: on its outvoted Results reaching the ledger as slashes.
    slash_outvoted: bool = True
    #: A first announcement to fewer named providers than this (but at least one) goes to
    #: them alone, not also to the class's topic: the lookup most likely found every
    #: provider of the class, and a topic message costs each subscriber several copies.
    #: Re-announcements, and jobs with no or this many named providers, use the topic too.
    direct_only_below: int = 16
    #: How many replicas a job runs on (specs/marketplace.md, "Replication policy"):
    #: ``fixed``, the job's ``redundancy`` (plus a probation replica for newcomers; a job
    #: of redundancy 1 on an established provider audited at ``audit_permille``);
    #: ``adaptive``, one replica when the best bid is a trusted provider's (audited at
    #: ``audit_permille``), ``redundancy`` otherwise, and never again a provider this
    #: requester caught.
    replication: Literal["fixed", "adaptive"] = "fixed"
    #: Adaptive: a trusted provider has at least this many settled jobs on the ledger, a
    #: ledger score of at least ``trusted_score_permille``, at least ``trusted_stake``
    #: bonded (what a slash takes when it is caught), at most ``trusted_max_failures``
    #: units of failure on the ledger (a slash is 4: a provider any requester caught is
    #: trusted by none until its record decays), and was never outvoted in (or
    #: contradicted the known answer of) a job of this requester.
    trusted_jobs: int = 20
    trusted_score_permille: int = 900
    trusted_stake: int = 1_000_000
    trusted_max_failures: int = 3
    #: The chance (per mille, from ``rng``) that a job given to one provider alone (under
    #: adaptive, a trusted provider's; under fixed, one of redundancy 1 given to an
    #: established provider, with another bid in hand) also runs on a second one, so that
    #: a provider that cheats where it runs alone is outvoted, caught and slashed.
    audit_permille: int = 50
    #: The providers caught remembered (the oldest is forgotten first).
    caught_limit: int = 4_096


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """What a provider offers and how it prices and paces its work."""

    key: nacl.signing.SigningKey
    chain_id: str
    capability_classes: tuple[str, ...]
    runtimes: tuple[str, ...] = ("onnx",)
    execution_providers: tuple[str, ...] = ("CPUExecutionProvider",)
    memory_mb: int = 4_096
    #: Memory of the largest GPU; 0 means the node has no usable GPU.
    gpu_memory_mb: int = 0
    #: The determinism class of a run not listed in ``determinism_classes``.
    determinism_class: str = "ort-1.32.0/cpu/generic/extended"
    #: The determinism class each way of running a job lands in, by :func:`run_key`: a GPU
    #: node runs a CPU job on its CPU, and a TorchScript run is in torch's class. A bid
    #: names the class of the run it would make (:meth:`class_for`).
    determinism_classes: Mapping[str, str] = field(default_factory=dict)
    price_floor: int = 1_000
    max_concurrency: int = 1
    #: Bids do not reserve a slot; at most ``max_concurrency * overbook`` are open at once.
    overbook: int = 2
    bench_score: int = 1_000
    reference_bench: int = 1_000
    load_markup_permille: int = 500
    base_run_ms: int = 200
    #: What starting a worker of a runtime adds to a run, by runtime (a cold TorchScript
    #: worker imports torch first): added to the run time a bid promises.
    start_ms: Mapping[str, int] = field(default_factory=dict)
    #: A bid stays valid this long after the requester's bid window.
    bid_validity_ms: int = 5_000
    heartbeat_interval_ms: int = 1_000
    #: The first heartbeat after an award (a run that delivers sooner sends none); keep it
    #: well under the requester's ``award_resend_ms`` so an accepted award is not resent.
    first_heartbeat_ms: int = 250
    #: Resend an unacknowledged result this often until a receipt arrives.
    result_resend_ms: int = 1_000
    claim_window_blocks: int = 10
    #: The job's escrow as the driver's ledger has it now: the output bytes go only when it
    #: covers the award (``Provider`` holds them until a block shows it does).
    escrow_of: EscrowLookup = no_escrow
    #: Whether jobs from requesters not in ``trusted_requesters`` are accepted.
    accepts_untrusted: bool = True
    #: Whether jobs in ``tolerance`` verification mode are bid on. They are judged by their
    #: bytes, so every result gets a plain receipt and its output goes to the requester
    #: before it settles: it can then pay bidders of its own instead (specs/marketplace.md,
    #: "Known limits"). Such a job with both tolerances 0 is refused even so.
    tolerance_jobs: bool = False
    trusted_requesters: frozenset[bytes] = frozenset()
    #: How many announcements are kept for :meth:`Provider.why_no_jobs`.
    history_limit: int = 1_000

    def class_for(self, spec: JobSpec) -> str:
        """The determinism class this node's run of ``spec`` would be in."""
        key = run_key(spec.runtime, spec.requirements.execution_provider, spec.graph_opt_level)
        return self.determinism_classes.get(key, self.determinism_class)
