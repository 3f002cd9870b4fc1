"""Judging a requester's job: which outputs are compared, and how (specs/marketplace.md,
"Verification"). Plain functions of a job and the requester's configuration.

- Results are judged by commitment, before their bytes arrive, when equal outputs are
  equal commitments: ``exact`` mode with every result (and the known answer) in one
  determinism class (``by_commitment``). Otherwise tolerances need the bytes: only the
  outputs whose bytes arrived are judged.
- A known answer matched, or ``required`` agreeing outputs in a strict majority, verifies
  the job (``scheduler._verification.judge``). Probation: when an established provider's
  output is judged, newcomers never outvote it; a majority without it is a disagreement.
"""

from __future__ import annotations

from protocol import VerificationPolicy

from ._config import RequesterConfig
from ._effects import Output
from ._requester_jobs import ReplicaState, RequesterJob
from ._requester_policy import required, veteran_replicas
from ._verification import Verdict, VerdictStatus, judge


def by_commitment(job: RequesterJob) -> bool:
    """Whether the job's results can be judged before their bytes arrive: ``exact``
    mode with every result (and the known answer) in one determinism class, where
    equal outputs are equal commitments. Otherwise tolerances need the bytes."""
    if job.spec.verification.mode != "exact":
        return False
    classes = {r.output.determinism_class for r in job.replicas if r.output is not None}
    if job.known is not None:
        classes.add(job.known.determinism_class)
    return len(classes) <= 1


def verdict_inputs(job: RequesterJob) -> list[tuple[int, Output]]:
    """The outputs to judge: every result's commitment when they can be compared by
    commitment alone (``by_commitment``), else the outputs whose bytes arrived."""
    if by_commitment(job):
        return [(r.index, r.output) for r in job.replicas if r.output is not None]
    return [
        (r.index, r.output)
        for r in job.replicas
        if r.output is not None and r.state == ReplicaState.DELIVERED
    ]


def judge_job(job: RequesterJob, config: RequesterConfig) -> Verdict:
    """The verdict on what has arrived so far (``verdict_inputs``)."""

    def compare(a: Output, b: Output, policy: VerificationPolicy) -> bool:
        if policy.mode == "exact" and a.determinism_class == b.determinism_class:
            return a.commitment == b.commitment
        return config.compare(a, b, policy)

    verdict = judge(
        verdict_inputs(job),
        required=required(job, config),
        policy=job.spec.verification,
        compare=compare,
        known=job.known,
    )
    if verdict.status == VerdictStatus.VERIFIED and job.known is None:
        # Probation: newcomers never outvote an established provider of the job; a
        # majority of newcomers against one is a disagreement (more replicas, or no pay).
        veteran = veteran_replicas(job, config)
        delivered = {i for i, _ in verdict_inputs(job)}
        if veteran & delivered and not veteran & set(verdict.accepted):
            return Verdict(VerdictStatus.DISAGREE, (), (), None)
    return verdict


def default_policy() -> VerificationPolicy:
    """Exact comparison, no spot checks: the policy of a plain deterministic job."""
    return VerificationPolicy(mode="exact", rtol_e9=0, atol_e9=0, spot_check_permille=0)
