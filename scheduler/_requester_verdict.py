"""Judging a requester's job: which outputs are compared, and how (specs/marketplace.md,
"Verification"). Plain functions of a job and the requester's configuration.

- Results are judged by commitment, before their bytes arrive, when equal outputs are
  equal commitments: ``exact`` mode with every result (and the known answer) in one
  determinism class (``by_commitment``). Otherwise tolerances need the bytes: only the
  outputs whose bytes arrived are judged.
- A known answer matched, or ``required`` agreeing outputs in a strict majority, verifies
  the job (``scheduler._verification.judge``). Probation (``veterans_needed``): without a
  known answer, an agreement must hold two established providers' outputs when the job
  needs two agreeing results and two established providers bid, else one once an
  established provider was awarded a replica (``probation_bound``); one short of that is
  a disagreement, whether it would verify or be accepted short. When established outputs
  disagree, only theirs are counted (a strict majority of them, a newcomer's vote never
  tips it): newcomers never outvote an established provider, nor decide in its place
  when its replica failed or declined. Should the job end so (no established bid to
  take the place), it is ``unverified`` and nobody is paid (``probation_unmet``).
"""

from __future__ import annotations

from dataclasses import replace

from protocol import Bid, Signed, VerificationPolicy

from ._config import RequesterConfig
from ._effects import Effect, JobStatus, Output
from ._requester_jobs import ReplicaState, RequesterJob
from ._requester_policy import (
    Caught,
    candidates,
    enough_answers,
    established,
    required,
    veteran_replicas,
    veterans_needed,
    veterans_short,
)
from ._verification import Compare, Verdict, VerdictStatus, judge


def by_commitment(job: RequesterJob) -> bool:
    """Whether the job's results can be judged before their bytes arrive: ``exact``
    mode with every result (and the known answer) in one determinism class, where
    equal outputs are equal commitments. Otherwise tolerances need the bytes."""
    if job.spec.verification.mode != "exact":
        return False
    classes = {
        r.output.determinism_class for r in job.replicas if r.output is not None and not r.set_aside
    }
    if job.known is not None:
        classes.add(job.known.determinism_class)
    return len(classes) <= 1


def verdict_inputs(job: RequesterJob) -> list[tuple[int, Output]]:
    """The outputs to judge: every result's commitment when they can be compared by
    commitment alone (``by_commitment``), else the outputs whose bytes arrived."""
    if by_commitment(job):
        return [
            (r.index, r.output) for r in job.replicas if r.output is not None and not r.set_aside
        ]
    return [
        (r.index, r.output)
        for r in job.replicas
        if r.output is not None and r.state == ReplicaState.DELIVERED and not r.set_aside
    ]


def judge_job(job: RequesterJob, config: RequesterConfig) -> Verdict:
    """The verdict on what has arrived so far (``verdict_inputs``), probation applied
    (``veterans_needed``): an agreement holding fewer established providers' outputs than
    needed is a disagreement (one more replica, an established one; at the end, nobody
    paid), be it a majority against one or all that arrived after its replica failed.
    When the established outputs judged disagree, they alone decide
    (``_by_veterans``)."""
    need = veterans_needed(job, config)
    if not need:
        return _judge_outputs(job, config)
    vets = veteran_replicas(job, config)
    theirs = [(i, o) for i, o in verdict_inputs(job) if i in vets]
    if _split(job, theirs, config):
        return _by_veterans(job, theirs, need, config)
    if need >= 2 and len(theirs) >= need:
        # Established outputs enough to decide agree: they decide, with every output that
        # agrees with them. Counted among all outputs, free keys bidding lowest and
        # agreeing on one wrong output kept any majority from forming, however many
        # established providers agreed, and the job failed (round 26, H2). Not with one
        # established output needed: one staked key must not outvote honest newcomers.
        verdict = _by_veterans(job, theirs, need, config)
        if verdict.status == VerdictStatus.VERIFIED:
            return verdict
    verdict = _judge_outputs(job, config)
    if verdict.status in (VerdictStatus.VERIFIED, VerdictStatus.TOO_FEW) and (
        len(vets & set(verdict.accepted)) < need
    ):
        return Verdict(VerdictStatus.DISAGREE, (), (), None)
    return verdict


def window_may_close(job: RequesterJob, config: RequesterConfig, caught: Caught) -> bool:
    """Whether the bid window may close early (``enough_answers``): never while
    established outputs are split, whose tie-breaker is drawn among every established
    bid of the window (closed on the first to come, a pair's second key that answered
    fast broke every tie of a re-announced job: review round 68, K1)."""
    if job.replicas and veterans_split(job, config):
        return False
    return enough_answers(job, config, caught)


def veterans_split(job: RequesterJob, config: RequesterConfig) -> bool:
    """Whether established providers' outputs judged in ``job`` disagree (and probation
    holds): only another established output can break their tie."""
    if not veterans_needed(job, config):
        return False
    vets = veteran_replicas(job, config)
    return _split(job, [(i, o) for i, o in verdict_inputs(job) if i in vets], config)


def offers(
    job: RequesterJob, config: RequesterConfig, now_ms: int, caught: Caught
) -> list[Signed[Bid]]:
    """The bids to award next (``candidates``): established providers' only while their
    outputs disagree (``veterans_split``), a newcomer's output would change nothing; and
    established providers' first while a job needing two established outputs has
    established outputs in and no verdict (``veterans_stalled``): the next cheapest bids
    were the free keys blocking it, each award one more wrong output (round 26, H2).
    Only theirs there barred the newcomer that completes an agreement short of the
    redundancy (round 27, I2)."""
    split = veterans_split(job, config)
    stalled = not split and veterans_stalled(job, config)
    bids = candidates(job, config, now_ms, caught, veterans_only=split, veterans_first=stalled)
    if split:
        # The tie-breaker drawn among the established bids: the cheapest was one
        # person's second staked key priced next to its first whenever it bid so (round
        # 67, J4).
        vets = [s for s in bids if established(config.reputation(s.message.provider), config)]
        if len(vets) > 1:
            tie_breaker = config.rng.choice(vets)
            bids = [tie_breaker, *(s for s in bids if s is not tie_breaker)]
    return bids


def veterans_stalled(job: RequesterJob, config: RequesterConfig) -> bool:
    """Whether ``job`` needs two established outputs or more, holds at least one, and has
    no verdict yet."""
    if veterans_needed(job, config) < 2:
        return False
    vets = veteran_replicas(job, config)
    if not any(i in vets for i, _ in verdict_inputs(job)):
        return False
    return judge_job(job, config).status != VerdictStatus.VERIFIED


def probation_unmet(job: RequesterJob, config: RequesterConfig) -> Verdict | None:
    """The agreement probation alone turned down (``judge_job``): outputs that agree,
    verified or accepted short without probation, holding fewer established providers'
    outputs than needed (``veterans_needed``), with no established output outside them
    (an established provider's replica failed or declined, and no other established
    provider took its place). ``None`` otherwise (among others when an established
    provider's output is outvoted: a plain disagreement)."""
    need = veterans_needed(job, config)
    if not need:
        return None
    vets = veteran_replicas(job, config)
    verdict = _judge_outputs(job, config)
    if not verdict.accepted or verdict.status == VerdictStatus.DISAGREE:
        return None
    if len(vets & set(verdict.accepted)) >= need or vets & set(verdict.rejected):
        return None
    return verdict


def probation_outcome(
    job: RequesterJob, config: RequesterConfig, effects: list[Effect], *, ledger: bool
) -> list[Effect]:
    """The decision ``effects`` (``finalise``) of a job ending with ``probation_unmet``:
    the verdict was a disagreement, so nothing is paid, no receipt goes out and the escrow
    is refunded at its expiry; the user is told why, and ``unverified`` with the
    newcomers' output when its bytes arrived (they agree, but verify nothing). Without a
    receipt an honest provider never hands its key over, so in ``exact`` mode the bytes
    rarely open and the job stays ``failed``. A job that failed short of established
    replicas (``veterans_short``) is told why no newcomer took their place."""
    done = job.done
    if done is None or done.status != JobStatus.FAILED or done.paid or job.disputed:
        return effects  # (an undecided audit says why itself)
    unmet = probation_unmet(job, config)
    two = veterans_needed(job, config) >= 2
    if unmet is None:
        if not veterans_short(job, config):
            return effects
        # Failed with nothing judged: say why no newcomer stood in for the lost replica.
        why = (
            "; the established provider awarded this job failed or declined and no other "
            "established provider bid to take its place (providers on probation alone "
            "do not decide a job an established provider was awarded)"
        )
        if two:
            why = (
                "; two established providers bid for this job, so an agreement needs two "
                "of their outputs, and no other established provider bid to take the "
                "place of one that failed or declined"
            )
        job.done = replace(done, reason=done.reason + why)
        return [job.done if e is done else e for e in effects]
    agreeing = [job.replicas[i] for i in unmet.accepted]
    opened = [r.output for r in agreeing if r.state == ReplicaState.DELIVERED]
    vets = len(veteran_replicas(job, config) & set(unmet.accepted))
    head = f"{len(agreeing)} of {len(verdict_inputs(job))} results agree, "
    if vets:
        head += (
            f"only {vets} of them from an established provider: two established providers "
            "bid for this job, so an agreement needs two of their outputs, and no other "
            "established provider delivered one, so "
        )
    else:
        head += (
            "all of them from providers on probation: the established provider awarded "
            "this job did not deliver and no other established provider bid to take its "
            "place, so "
        )
    reason = (
        head
        + ("the output is not verified" if opened else "no output was opened")
        + " and nobody is paid"
    )
    if ledger:
        reason += f"; the escrow is refunded at its expiry, block {job.spec.escrow_expiry_height}"
    # As for a job accepted short: ``unverified`` with an output to hand over, else failed.
    status = JobStatus.UNVERIFIED if opened else JobStatus.FAILED
    job.done = replace(done, status=status, reason=reason, output=opened[0] if opened else None)
    return [job.done if e is done else e for e in effects]


def _compare(config: RequesterConfig, memo: dict[tuple[bytes, str, bytes, str], bool]) -> Compare:
    """Outputs compared as the verdict does: by commitment within one class in ``exact``
    mode, else by the injected comparison, each pair once (kept in ``memo``, a job's
    ``compared``: its policy is the job's)."""

    def compare(a: Output, b: Output, policy: VerificationPolicy) -> bool:
        if policy.mode == "exact" and a.determinism_class == b.determinism_class:
            return a.commitment == b.commitment
        pair = (a.commitment, a.determinism_class, b.commitment, b.determinism_class)
        same = memo.get(pair)
        if same is None:
            same = memo[pair] = config.compare(a, b, policy)
        return same

    return compare


def _judge_outputs(job: RequesterJob, config: RequesterConfig) -> Verdict:
    """The verdict on the outputs alone (``judge``), before probation."""
    return judge(
        verdict_inputs(job),
        required=required(job, config),
        policy=job.spec.verification,
        compare=_compare(config, job.compared),
        known=job.known,
    )


def _split(job: RequesterJob, theirs: list[tuple[int, Output]], config: RequesterConfig) -> bool:
    """Whether the established providers' outputs ``theirs`` fall in more than one group."""
    if len(theirs) < 2:
        return False
    policy = job.spec.verification
    compare = _compare(config, job.compared)
    return any(not compare(theirs[0][1], o, policy) for _, o in theirs[1:])


def _by_veterans(
    job: RequesterJob, theirs: list[tuple[int, Output]], need: int, config: RequesterConfig
) -> Verdict:
    """The verdict when established outputs disagree: theirs alone are counted. A group of
    at least ``need`` of them holding a strict majority of them wins, with every output
    (newcomers' too) that agrees with it, when those are at least ``required``; anything
    else is a disagreement, broken by more established replicas only. An established
    provider is never outvoted (attested against, slashed) by a majority that needed a
    newcomer's output, nor does a newcomer's vote stand in for an established one."""
    policy = job.spec.verification
    compare = _compare(config, job.compared)
    ours = judge(theirs, required=need, policy=policy, compare=compare)
    disagree = Verdict(VerdictStatus.DISAGREE, (), (), None)
    if ours.status != VerdictStatus.VERIFIED or ours.reference is None:
        return disagree
    ref = ours.reference
    inputs = verdict_inputs(job)
    won = tuple(i for i, o in inputs if i in ours.accepted or compare(ref, o, policy))
    if len(won) < required(job, config):
        return disagree
    lost = tuple(i for i, _ in inputs if i not in won)
    return Verdict(VerdictStatus.VERIFIED, won, lost, ref)


def default_policy() -> VerificationPolicy:
    """Exact comparison, no spot checks: the policy of a plain deterministic job."""
    return VerificationPolicy(mode="exact", rtol_e9=0, atol_e9=0, spot_check_permille=0)
