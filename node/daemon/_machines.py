"""The node's marketplace machines built from its settings: a :class:`scheduler.Requester`
for the requester role, a :class:`scheduler.Provider` for a contributor, with what they
read of the world (a provider's reputation on the ledger, the sandbox's comparison rule).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import ledger
import protocol
import scheduler
from protocol import VerificationPolicy
from sandbox import compare_outputs

from ._codec import commitment_of, outputs_from_bytes
from .submit import CLAIM_WINDOW_BLOCKS, SETTLE_MARGIN_BLOCKS

if TYPE_CHECKING:
    from ._node import Node


def requester_machine(node: Node) -> scheduler.Requester:
    """A requester with the node's key, chain and ``[requester]`` policy."""
    policy = node.config.requester
    return scheduler.Requester(
        scheduler.RequesterConfig(
            key=node.key,
            chain_id=node.chain_id,
            reputation=lambda who: reputation(node.ledger.state, who),
            compare=compare,
            commitment=commitment,
            # its own stream in a test's seeded run; the system's otherwise (R64-4)
            rng=node.rng
            if isinstance(node.rng, random.SystemRandom)
            else random.Random(node.rng.random()),
            claim_window_blocks=CLAIM_WINDOW_BLOCKS,
            settle_margin_blocks=SETTLE_MARGIN_BLOCKS,
            replication=policy.replication,
            probation_stake=policy.probation_stake,
            trusted_jobs=policy.trusted_jobs,
            trusted_score_permille=policy.trusted_score_permille,
            trusted_stake=policy.trusted_stake,
            trusted_max_failures=policy.trusted_max_failures,
            audit_permille=policy.audit_permille,
            slash_outvoted=policy.slash_outvoted,
        )
    )


def provider_machine(node: Node) -> scheduler.Provider:
    """A provider offering the node's ``profile`` (what the owner offers of the machine)
    on the terms of its ``[contributor]`` settings."""
    assert node.profile is not None
    profile = node.profile
    contributor = node.config.contributor
    return scheduler.Provider(
        scheduler.ProviderConfig(
            key=node.key,
            chain_id=node.chain_id,
            capability_classes=profile.classes(),
            runtimes=profile.runtimes,
            execution_providers=profile.execution_providers,
            memory_mb=profile.memory_mb,
            gpu_memory_mb=profile.gpu_memory_mb,
            determinism_class=profile.determinism_class,
            determinism_classes=profile.determinism_classes,
            start_ms=profile.start_ms,
            price_floor=contributor.price_floor,
            max_concurrency=contributor.max_concurrency,
            bench_score=max(1, profile.bench_score),
            base_run_ms=contributor.base_run_ms,
            claim_window_blocks=CLAIM_WINDOW_BLOCKS,
            accepts_untrusted=contributor.allow_untrusted,
            tolerance_jobs=contributor.tolerance_jobs,
            escrow_of=lambda job_id: node.ledger.state.escrow(job_id),
        )
    )


def reputation(state: ledger.State, who: bytes) -> scheduler.Reputation:
    """What the ledger says of ``who`` as a provider."""
    return scheduler.Reputation(*state.provider_record(who))


def commitment(data: bytes) -> bytes | None:
    """The sandbox's output commitment of delivered output bytes (``None``: malformed)."""
    try:
        return commitment_of(outputs_from_bytes(data))
    except (protocol.ProtocolError, ValueError, TypeError, KeyError):
        return None


def compare(a: scheduler.Output, b: scheduler.Output, policy: VerificationPolicy) -> bool:
    """The sandbox's comparison rule, on outputs as they travel."""
    if a.determinism_class == b.determinism_class and policy.mode == "exact":
        return a.commitment == b.commitment
    try:
        xa, xb = outputs_from_bytes(a.data), outputs_from_bytes(b.data)
    except protocol.ProtocolError:
        return False
    try:
        return compare_outputs(
            xa, xb, class_a=a.determinism_class, class_b=b.determinism_class, policy=policy
        ).agree
    except ValueError:
        return False
