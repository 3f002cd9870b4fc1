"""Deciding a requester's job and paying for it (specs/marketplace.md, "Finalise").
Plain functions of a job, the requester's configuration and what they read; the
:class:`~scheduler.Requester` machine calls them.

- Receipts are only for verified work: the winners of the verdict get theirs when the job
  is decided, the outvoted never do (so they cannot claim). At the deadline, results
  accepted while another replica still ran get their sealed receipts, and the job waits
  for their keys.
- Finalising settles: the winning group is paid its award prices (each payout carries the
  provider's signed Bid), the minority is attested against (and slashed, with the paid
  majority's Results as evidence), the rest of the escrow goes back. A settle pays at
  least ``redundancy`` providers (the ledger refuses a shorter one before the escrow's
  expiry); with fewer winners the escrow is refunded at its expiry and each winner claims
  with its receipt.
"""

from __future__ import annotations

from collections import Counter

from protocol import Result, Signed

from ._config import RequesterConfig
from ._effects import (
    Attest,
    CancelTimer,
    Effect,
    JobDone,
    JobStatus,
    Output,
    Payout,
    Settle,
    Slash,
    TimerKey,
    TimerKind,
)
from ._ledger import EscrowView
from ._reasons import explain_no_bids
from ._requester_exchange import issue_receipt, key_due, keys_pending
from ._requester_jobs import (
    _CORRUPT,
    _LATE,
    _SILENT,
    _WITHHELD,
    WITNESS_HORIZON_BLOCKS,
    WITNESSES,
    JobPhase,
    Replica,
    ReplicaState,
    RequesterJob,
)
from ._requester_policy import Caught, catch, drop_failed_audit
from ._requester_verdict import by_commitment, judge_job, verdict_inputs
from ._verification import Verdict, VerdictStatus, slashable_class


def finalise_short(
    job: RequesterJob,
    now_ms: int,
    config: RequesterConfig,
    me: bytes,
    caught: Caught,
    height: int,
) -> list[Effect]:
    """No replica left to award: finalise with what arrived. Results accepted short of
    the redundancy (paid as unverified work) have their bytes fetched first: their
    receipts go out, and the job is finalised when the bytes arrive or fail to. The job is
    then overdue: nothing more is awarded. A bid that came later was awarded, and a lone
    cheat holding such a receipt, claimable at once, was paid before late veterans
    outvoted it, beyond a slash (round 30, L1)."""
    verdict = judge_job(job, config)
    accepted = [job.replicas[i] for i in verdict.accepted]
    if verdict.status == VerdictStatus.TOO_FEW and not any(
        r.state == ReplicaState.DELIVERED for r in accepted
    ):
        effects: list[Effect] = []
        for r in accepted:
            if r.state == ReplicaState.COMMITTED:
                sealed = job.spec.verification.mode == "exact"
                effects += issue_receipt(job, r, now_ms, config, me, height, sealed=sealed)
        if effects or any(r.state == ReplicaState.COMMITTED for r in accepted):
            job.overdue = True
            return effects
    return finalise(job, now_ms, config, me, caught, height, forced=True)


def receipts_at_deadline(
    job: RequesterJob, now_ms: int, config: RequesterConfig, me: bytes, height: int
) -> list[Effect]:
    """The deadline came while a replica still ran: results judged by commitment that the
    verdict accepts (verified winners, or ``too_few`` accepted short) and whose sealed
    bytes are held got no receipt yet. Their sealed receipts go now, so that each key
    comes with its claim (the job waits for it, overdue) rather than the job being decided
    without an output it holds sealed, and the work delivered in time going unpaid."""
    if not by_commitment(job):
        return []
    verdict = judge_job(job, config)
    if verdict.status not in (VerdictStatus.VERIFIED, VerdictStatus.TOO_FEW):
        return []
    effects: list[Effect] = []
    for i in verdict.accepted:
        r = job.replicas[i]
        if r.state == ReplicaState.COMMITTED and r.sealed and r.receipt is None:
            effects += issue_receipt(job, r, now_ms, config, me, height, sealed=True)
    return effects


def force(
    job: RequesterJob,
    now_ms: int,
    config: RequesterConfig,
    me: bytes,
    caught: Caught,
    height: int,
    *,
    settle_limit: bool,
) -> tuple[list[Effect], bool]:
    """The deadline or the settle limit came: accepted results whose sealed bytes are held
    get their sealed receipts (``receipts_at_deadline``; the settle limit once gave none,
    and work delivered in time went unpaid: round 17, R17B-3). A winner holding one
    publishes its key in its claim's block: while one is pending the job is overdue,
    decided when the key comes (the settle limit waits until its ``claim_by``: deciding
    at once, the claim then paid for an output never read, and the winner was attested
    against as withholding it: round 16, R16B-4). An audit still undecided is settled
    first (``drop_failed_audit``: nothing more will be awarded). Returns the effects and
    whether to decide now."""
    if judge_job(job, config).status != VerdictStatus.VERIFIED:
        drop_failed_audit(job, config, now_ms, caught, final=True)
    effects = receipts_at_deadline(job, now_ms, config, me, height)
    if key_due(job) > height if settle_limit else keys_pending(job):
        job.overdue = True
        return effects, False
    return effects, True


def finalise(
    job: RequesterJob,
    now_ms: int,
    config: RequesterConfig,
    me: bytes,
    caught: Caught,
    height: int,
    *,
    forced: bool,
    ledger: bool = True,
) -> list[Effect]:
    """Decide the job with what has arrived, pay, attest, and settle or refund.
    ``forced``: the job ends now (deadline, settle limit, nothing left to award), so
    results accepted short of the redundancy are paid as unverified work. ``ledger``:
    the escrow is still open (a settle, or the refund at its expiry, is on its way)."""
    verdict = judge_job(job, config)
    by_index = {r.index: r for r in job.replicas}
    effects: list[Effect] = [
        CancelTimer(TimerKey(TimerKind.DEADLINE, job.id)),
        CancelTimer(TimerKey(TimerKind.BIDS, job.id)),
    ]
    for r in job.replicas:
        if r.state == ReplicaState.RUNNING:
            effects.append(CancelTimer(TimerKey(TimerKind.WATCH, job.id, r.index)))
    paid: list[Payout] = []
    output: Output | None = None
    report = None
    status = JobStatus.FAILED
    pays = verdict.status == VerdictStatus.VERIFIED or (
        forced and verdict.status == VerdictStatus.TOO_FEW
    )
    winners = [by_index[i] for i in verdict.accepted] if pays else []
    arrived = [w for w in winners if w.state == ReplicaState.DELIVERED]
    if arrived:
        verified = verdict.status == VerdictStatus.VERIFIED
        status = JobStatus.VERIFIED if verified else JobStatus.UNVERIFIED
        reason = f"{len(winners)} of {len(verdict_inputs(job))} results agree"
        if job.known is not None:
            reason += " with the known answer"

        output = arrived[0].output
        paid = [Payout(w.provider, w.award.message.price, w.bid) for w in arrived]
        for w in arrived:  # receipts only for verified (or, forced, accepted) work
            effects += issue_receipt(job, w, now_ms, config, me, height)
        # No positive attestation: the payout is what counts for the winners (the
        # ledger adds nothing for one), so it would only cost a fee and a transaction.
        losers = [by_index[i] for i in verdict.rejected]
        # the evidence is the paid winners' Results only: the ledger takes none naming an
        # unpaid one, and a winner withholding its key at a forced finalise made the honest
        # report refused and counted against us (review round 10, R10-3)
        effects += punish(job, verdict, losers, arrived, config, caught, height)
    elif winners:
        # Judged by commitment, but no winner's bytes came: nothing to hand over, and
        # nothing settled; the winners holding receipts may claim.
        held = [w for w in winners if w.receipt is not None]
        reason = f"{len(winners)} results agree but no output arrived in time"
        if held:
            reason += f" ({len(held)} providers hold receipts and may claim)"
        # Withheld only once its claim_by is behind us: a winner still able to claim may
        # yet publish its key (review round 16, R16B-4)
        effects += [
            Attest(job.id, w.provider, False, _WITHHELD, ())
            for w in held
            if not (w.receipt is not None and w.receipt.message.sealed)
            or w.receipt.message.claim_by <= height
        ]
    elif not job.replicas and job.caught_bidders:
        reason = (
            f"no bids but from {len(job.caught_bidders)} provider(s) this node caught with a "
            "wrong result before, whose bids it refuses: wait for other providers (or "
            "raise max_price to reach more)"
        )
    elif not job.replicas:
        report = explain_no_bids(job.nobids.values(), len(job.providers))
        reason = f"no bids: {report.primary}"
    elif job.disputed:
        reason = job.disputed
    elif job.known is not None and verdict.rejected:
        reason = "every result contradicts the known answer"
        losers = [by_index[i] for i in verdict.rejected]
        effects += punish(job, verdict, losers, [], config, caught, height)
    elif verdict.status == VerdictStatus.DISAGREE:
        reason = "results disagree and no majority formed within the retry budget"
    elif said := job.rejections():
        (first, _), *_ = Counter(said).most_common(1)
        providers = len({r.provider for r in job.replicas})
        reason = f"rejected by every provider awarded it ({providers}): {first}"
    else:
        reason = "no result arrived in time"
    for r in job.replicas:
        if r.state == ReplicaState.FAILED and r.reason in (_SILENT, _LATE, _CORRUPT, _WITHHELD):
            effects.append(Attest(job.id, r.provider, False, r.reason, ()))
    if ledger:
        job.phase = JobPhase.SETTLING
        claims_open = job.spec.escrow_expiry_height - config.claim_window_blocks
        payouts = tuple(p for p in paid if p.amount > 0)
        # A winner holding a sealed receipt whose key has not come (a forced finalise)
        # may have its claim in flight: a settle landing first would close the escrow
        # under it, unpaid for verified work (review round 11, R11-5). It claims; the rest
        # is refunded at expiry.
        claiming = any(
            w.receipt is not None and w.receipt.message.at_once and w not in arrived
            for w in winners
        )
        if height < claims_open and len(payouts) >= job.spec.redundancy and not claiming:
            effects.append(Settle(job.id, payouts))
        elif status == JobStatus.FAILED:
            # Too late to settle (claims may be landing), or fewer payees than the
            # redundancy (the ledger refuses such a settle before expiry: the providers
            # holding receipts claim): refunded at expiry, never earlier (an empty
            # settle before expiry could take work providers may still claim for).
            expiry = job.spec.escrow_expiry_height
            reason += f"; the escrow is refunded at its expiry, block {expiry}"
        # else: the winners hold receipts and claim; the rest is refunded at expiry.
    done = JobDone(job.id, status, reason, output, tuple(paid), report)
    job.done = done
    effects.append(done)
    return effects


def punish(
    job: RequesterJob,
    verdict: Verdict,
    losers: list[Replica],
    winners: list[Replica],
    config: RequesterConfig,
    caught: Caught,
    height: int,
) -> list[Effect]:
    """Attest against (and, for a known answer or with ``slash_outvoted``, slash) each
    provider in the minority, with its signed result and the winners' as evidence, and
    remember it as caught (``height``: the last block seen). A slash goes only with the
    Results of at least two paid winners: the ledger slashes on nothing less (a known
    answer alone is not evidence a replica can check). The attestation asks for a report
    (``Attest.report``) only with a slash: an outvoted loser is never paid, so its
    attestation never lands, and without ``slash_outvoted`` it must not become a slash
    report either."""
    effects: list[Effect] = []
    for r in losers:
        if r.result is None:
            continue
        catch(r.provider, config, caught)
        # The ledger compares outputs within one determinism class only: winners of
        # another class are no evidence (in tolerance mode a cheater bidding a class of
        # its own made every report refused, and counted against us: round 17, R17B-2).
        # And the majority shares one commitment: in tolerance mode winners within
        # tolerance of each other may differ, and evidence mixing two was refused (round
        # 18, R18-4): the largest group of one commitment goes.
        cls = r.result.message.determinism_class
        groups: dict[bytes, list[Signed[Result]]] = {}
        for w in winners:
            if w.result is not None and w.result.message.determinism_class == cls:
                groups.setdefault(w.result.message.output_commitment, []).append(w.result)
        largest = max(groups.values(), key=len, default=[])
        # The winners holding the most as witnesses: an unbonded one among them (the
        # cheater's own free key, say, with the right output) made its slash take
        # nothing (round 27, I3). Held as the ledger counts it, unbonding included (by
        # bonded stake alone an honest winner that unstaked after its award ranked below
        # the cheater's free key: round 28, J3), but only what is still held when the
        # slash can land (a helper's unbonding released just after the close was named
        # first, and the coordinator found it holding nothing: round 29, K2). Three go;
        # the coordinator picks two by its own reckoning.
        horizon = height + WITNESS_HORIZON_BLOCKS
        largest.sort(key=lambda w: -config.reputation(w.message.provider).held(horizon))
        won = tuple(largest)[:WITNESSES]
        evidence = (r.result, *won)
        slash: Slash | None = None
        if len(won) < 2:
            pass  # nothing the ledger could check: the attestation below only
        elif job.spec.runtime == "torchscript" or not slashable_class(cls):
            # Nothing proves such runs agree (a TorchScript job drawing one random bit had
            # honest providers of one class outvoted 2 to 1 three times in four, and each
            # slashed its whole stake: review round 76, R76-1; a GPU class holds every GPU
            # model: round 77, F3). Not paid, attested only.
            pass
        elif job.known is not None:
            why = "contradicts the known answer"
            slash = Slash(job.id, r.provider, why, evidence, job.known.commitment)
        elif config.slash_outvoted and verdict.reference is not None:
            why = "outvoted by the majority"
            slash = Slash(job.id, r.provider, why, evidence, verdict.reference.commitment)
        if slash is not None:
            effects.append(slash)
        report = slash is not None
        effects.append(Attest(job.id, r.provider, False, "outvoted", evidence, report=report))
    return effects


def still_payable(job: RequesterJob | None, escrow: EscrowView, height: int) -> frozenset[bytes]:
    """The providers ``escrow`` may still pay at ``height``, once closed: those whose
    reserved price it still holds and that hold a receipt of ours (a claim needs one; with
    ``job`` unknown, every such reserved provider). What is said about them on the ledger
    (an attestation needs its subject paid) waits until they are paid or the escrow is
    final (specs/daemon.md, "Attestations")."""
    if escrow.is_open or escrow.remaining == 0 or height >= escrow.expiry_height:
        return frozenset()
    holders = None if job is None else {r.provider for r in job.replicas if r.receipt is not None}
    return frozenset(
        p
        for p in escrow.places
        if escrow.reserved_for(p) and not escrow.paid_to(p) and (holders is None or p in holders)
    )
