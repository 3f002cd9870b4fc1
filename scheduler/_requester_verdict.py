"""Judging a requester's job: which outputs are compared, and how (specs/marketplace.md,
"Verification"). Plain functions of a job and the requester's configuration.

- Results are judged by commitment, before their bytes arrive, when equal outputs are
  equal commitments: ``exact`` mode with every result (and the known answer) in one
  determinism class (``by_commitment``). Otherwise tolerances need the bytes: only the
  outputs whose bytes arrived are judged.
- A known answer matched, or ``required`` agreeing outputs in a strict majority, verifies
  the job (``scheduler._verification.judge``). Probation: once an established provider
  was awarded a replica of the job (``probation_bound``), an agreement with no
  established provider's output in it is a disagreement, whether it would verify or be
  accepted short: newcomers never outvote an established provider, nor decide in its
  place when its replica failed or declined. Should the job end so (no established bid
  to replace it), it is ``unverified`` and nobody is paid (``probation_unmet``).
"""

from __future__ import annotations

from dataclasses import replace

from protocol import VerificationPolicy

from ._config import RequesterConfig
from ._effects import Effect, JobStatus, Output
from ._requester_jobs import ReplicaState, RequesterJob
from ._requester_policy import probation_bound, required, veteran_lost, veteran_replicas
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
    """The verdict on what has arrived so far (``verdict_inputs``), probation applied: in
    a job an established provider was awarded (``probation_bound``), outputs that agree
    with no established provider's among them are a disagreement (one more replica, an
    established one when none is live; at the end, nobody paid), be they a majority
    against it or all that arrived after its replica failed."""
    verdict = _judge_outputs(job, config)
    if verdict.status in (VerdictStatus.VERIFIED, VerdictStatus.TOO_FEW) and _newcomers_only(
        job, verdict, config
    ):
        return Verdict(VerdictStatus.DISAGREE, (), (), None)
    return verdict


def probation_unmet(job: RequesterJob, config: RequesterConfig) -> Verdict | None:
    """The agreement probation alone turned down (``judge_job``) when no established
    provider's output is judged at all (its replica failed or declined, and no other
    established provider took its place): newcomers' outputs that agree, verified or
    accepted short without probation. ``None`` otherwise (among others when an
    established provider's output is outvoted: a plain disagreement)."""
    judged = {i for i, _ in verdict_inputs(job)}
    if veteran_replicas(job, config) & judged:
        return None
    verdict = _judge_outputs(job, config)
    if verdict.status in (VerdictStatus.VERIFIED, VerdictStatus.TOO_FEW) and _newcomers_only(
        job, verdict, config
    ):
        return verdict
    return None


def probation_outcome(
    job: RequesterJob, config: RequesterConfig, effects: list[Effect], *, ledger: bool
) -> list[Effect]:
    """The decision ``effects`` (``finalise``) of a job ending with ``probation_unmet``:
    the verdict was a disagreement, so nothing is paid, no receipt goes out and the escrow
    is refunded at its expiry; the user is told why, and ``unverified`` with the
    newcomers' output when its bytes arrived (they agree, but verify nothing). Without a
    receipt an honest provider never hands its key over, so in ``exact`` mode the bytes
    rarely open and the job stays ``failed``. A job that failed with an established
    replica lost (``veteran_lost``) is told why no newcomer took its place."""
    done = job.done
    if done is None or done.status != JobStatus.FAILED or done.paid:
        return effects
    unmet = probation_unmet(job, config)
    if unmet is None:
        if not veteran_lost(job, config):
            return effects
        # Failed with nothing judged: say why no newcomer stood in for the lost replica.
        why = (
            "; the established provider awarded this job failed or declined and no other "
            "established provider bid to take its place (providers on probation alone "
            "do not decide a job an established provider was awarded)"
        )
        job.done = replace(done, reason=done.reason + why)
        return [job.done if e is done else e for e in effects]
    agreeing = [job.replicas[i] for i in unmet.accepted]
    opened = [r.output for r in agreeing if r.state == ReplicaState.DELIVERED]
    reason = (
        f"{len(agreeing)} of {len(verdict_inputs(job))} results agree, all of them from "
        "providers on probation: the established provider awarded this job did not deliver "
        "and no other established provider bid to take its place, so "
        + ("the output is not verified" if opened else "no output was opened")
        + " and nobody is paid"
    )
    if ledger:
        reason += f"; the escrow is refunded at its expiry, block {job.spec.escrow_expiry_height}"
    # As for a job accepted short: ``unverified`` with an output to hand over, else failed.
    status = JobStatus.UNVERIFIED if opened else JobStatus.FAILED
    job.done = replace(done, status=status, reason=reason, output=opened[0] if opened else None)
    return [job.done if e is done else e for e in effects]


def _judge_outputs(job: RequesterJob, config: RequesterConfig) -> Verdict:
    """The verdict on the outputs alone (``judge``), before probation."""

    def compare(a: Output, b: Output, policy: VerificationPolicy) -> bool:
        if policy.mode == "exact" and a.determinism_class == b.determinism_class:
            return a.commitment == b.commitment
        return config.compare(a, b, policy)

    return judge(
        verdict_inputs(job),
        required=required(job, config),
        policy=job.spec.verification,
        compare=compare,
        known=job.known,
    )


def _newcomers_only(job: RequesterJob, verdict: Verdict, config: RequesterConfig) -> bool:
    """Whether ``verdict`` accepts outputs none of which is an established provider's, in
    a job where one was awarded (``probation_bound``)."""
    if not verdict.accepted or not probation_bound(job, config):
        return False
    return not veteran_replicas(job, config) & set(verdict.accepted)


def default_policy() -> VerificationPolicy:
    """Exact comparison, no spot checks: the policy of a plain deterministic job."""
    return VerificationPolicy(mode="exact", rtol_e9=0, atol_e9=0, spot_check_permille=0)
