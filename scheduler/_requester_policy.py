"""The requester's replication policy: which bids are awarded first, on how many replicas a
job runs, and how many agreeing results verify it (specs/marketplace.md, "Replication
policy"). Plain functions of a job, the requester's configuration and the providers it
caught; the :class:`~scheduler.Requester` machine calls them and keeps the state.

- Fixed replication (``replication = "fixed"``): a job runs on the best ``redundancy``
  bids (``award_key``) and needs that many agreeing results. While fewer of the chosen
  providers are established (``established``: at least ``probation_jobs`` settled jobs and
  ``probation_stake`` bonded) than an agreement needs (``veterans_needed``: two at
  redundancy >= 2 when two established providers bid, else one), a probation replica is
  added: the best established provider's bid not chosen.
- Adaptive replication (``replication = "adaptive"``): a job runs on one replica when its
  best bid is a trusted provider's (a long clean record on the ledger, never caught by
  this requester), audited with a second replica at ``audit_permille``; on
  ``max(2, redundancy)`` replicas otherwise.
- Under either, providers this requester caught (``catch``: outvoted, contradicting a known
  answer, output bytes missing their commitment, withheld) are awarded none of its jobs
  again: at redundancy 1 a spot check's catch costs a cheater nothing else (round-6
  review R6-3).
- While fewer established providers' replicas are live than an agreement needs, or their
  outputs disagree, only an established bid is awarded (``veterans_short``): newcomers
  never take an established replica's place nor break a tie between established ones, and
  no award is made until such a bid comes.
- The bid window closes early once enough answers are in (``enough_answers``), never with
  fewer established bids in hand than an agreement needs.
"""

from __future__ import annotations

from dataclasses import replace

from protocol import Bid, JobSpec, Signed

from ._config import RequesterConfig
from ._pricing import Reputation, award_key
from ._requester_jobs import (
    _DECLINED,
    _SET_ASIDE,
    JobPhase,
    Replica,
    ReplicaState,
    RequesterJob,
)

#: Providers a requester caught with a wrong result, oldest first (a dict used as an
#: ordered set, at most ``caught_limit``): their bids are refused under every replication,
#: and adaptive replication never trusts them again.
Caught = dict[bytes, None]


def established(rep: Reputation, config: RequesterConfig) -> bool:
    """Whether a provider with ledger record ``rep`` is past probation: at least
    ``probation_jobs`` settled jobs and at least ``probation_stake`` bonded. The one test
    of it, wherever probation decides (the probation replica, the early close of a bid
    window, the anchor class, newcomers never outvoting an established provider).

    Settled jobs alone cost nothing: a settle counts toward them whoever paid, and two keys
    of one person settle jobs to each other at fee 0 (three each make a key "established"
    for 9 free transactions). Bonded stake is what a slash takes when an honest majority
    of at least two paid providers outvotes the provider, so being established puts it at
    risk there; a slash that takes it under ``probation_stake`` ends it. A spot check
    (known answer) at redundancy 1 catches a cheat for that requester only (``catch``) and
    slashes nothing: the ledger cannot check a known answer (round-6 review R6-3).

    Failure weight does not count here: any requester that pays a provider one job of 800
    may attest against it, and a rule that a failure unit ends being established let one
    such attestation turn an honest veteran into a newcomer, whom a staked key and a free
    key then outvoted (round-8 review R8-4)."""
    return rep.settled_jobs >= config.probation_jobs and rep.stake >= config.probation_stake


def _past_probation(provider: bytes, config: RequesterConfig) -> bool:
    return established(config.reputation(provider), config)


def spec_to_sign(spec: JobSpec, config: RequesterConfig) -> JobSpec:
    """The JobSpec to sign for ``spec``. Under adaptive replication, redundancy 1 with the
    same budget: the ledger refuses a settle paying fewer than the signed redundancy
    before the escrow's expiry, so the requester asks for ``redundancy`` agreeing results
    itself wherever the job does not run on one trusted provider."""
    asked = spec.redundancy
    if config.replication == "adaptive" and asked > 1:
        retries = min(64, spec.max_retries + asked - 1)
        spec = replace(spec, redundancy=1, max_retries=retries)
    return spec


def enough_answers(job: RequesterJob, config: RequesterConfig, caught: Caught) -> bool:
    """Enough answers to the latest announcement to award now: every named provider not
    excluded answered and one of them bid (waiting out the window would bring nothing but
    pubsub stragglers), with one of those bids past probation when the announcement also
    went to the topic; or, with the escrow locked, ``redundancy`` of them bid and one of
    them is past probation. Under adaptive replication the last is replaced by: the escrow
    is locked and a trusted provider bid. Newcomer bids alone never close a topic
    announcement's window early, however many and however named: the lookup that names
    providers can be filled with fresh keys (ground to sort first), and an established
    provider's bid from the topic must still find the window open."""
    named = [p for p in job.providers if p not in job.excluded]
    bidders = [p for p in job.answered if p in job.bids]
    if config.replication == "adaptive" and job.award_known is None:
        # A trusted bid settles the first award (alone, or audited with a spare bid):
        # award it once the escrow is locked. Without one, wait for every named
        # provider (or the window): a later answer may be a trusted provider's.
        if job.phase != JobPhase.LOCKING and any(trusted(p, config, caught) for p in bidders):
            return True
    elif (
        job.phase != JobPhase.LOCKING
        and len(bidders) >= job.asked
        and any(_past_probation(p, config) for p in bidders)
        and _veterans_in_hand(job, config, caught)
    ):
        # The escrow is locked and every replica has a bid: waiting for more would trade
        # latency for price. Only with the established bids an agreement needs in hand:
        # newcomer keys (free) bidding first, however many, must not close the window
        # before an established provider's bid (the probation replica's) comes, nor one
        # staked key and a free one before a second established provider's bid.
        return True
    if not (named and job.answered.issuperset(named) and bidders):
        return False
    # Announced on the topic too, a bid may still come from a provider the lookup did not
    # name: newcomers' bids alone wait for the window (the lookup keeps the records of the
    # smallest keys, and fresh keys ground to sort first can fill it). Announced to the
    # named providers alone, nobody else can bid: waiting would bring nothing.
    on_topic = job.announcements > 1 or not 0 < len(named) < config.direct_only_below
    return not on_topic or (
        any(_past_probation(p, config) for p in bidders) and _veterans_in_hand(job, config, caught)
    )


def _veterans_in_hand(job: RequesterJob, config: RequesterConfig, caught: Caught) -> bool:
    """Whether the established bids an agreement of ``job`` needs are in hand (bids kept,
    or live replicas): two at redundancy >= 2 without a known answer, else one. With
    fewer, the window runs to its end: one staked key and one free key answering first
    would otherwise be awarded the job before an honest established provider's bid came
    (round-6 review R6-7), and a young network with fewer established providers than
    that still works, only without the early end."""
    want = 2 if job.award_known is None and job.asked >= 2 else 1
    held = (set(job.bids) - caught.keys()) | {r.provider for r in job.live()}
    return sum(1 for p in held if _past_probation(p, config)) >= want


def candidates(
    job: RequesterJob,
    config: RequesterConfig,
    now_ms: int,
    caught: Caught,
    *,
    veterans_only: bool = False,
    veterans_first: bool = False,
) -> list[Signed[Bid]]:
    """Usable bids, best first (``award_key``); keys with no settled job last, oldest bid
    first, once such keys declined too often (``newcomers_last``). In ``exact`` mode only
    bids in one determinism class (``anchor_class``): replicas are then compared bit for
    bit, by commitment, and every receipt is a verified winner's (sealed). Comparing
    outputs of several classes would need them opened before a verdict, with keys handed
    over before pay. While ``veterans_short`` (or ``veterans_only``: the established
    outputs judged disagree, ``_requester_verdict.veterans_split``), established
    providers' bids first, and none at all without one. Never a bid of a provider in
    ``caught``, even one kept before it was caught (in another job of ours): refused, not
    ranked last, since a caught key that were merely last would still be awarded alone
    wherever it is the only bidder, which jamming the honest bidders' slots arranges; a
    job whose only bidders were caught announces again, and fails at its deadline."""
    spec = job.spec
    awarded = {r.provider for r in job.live()}
    rep = config.reputation
    kept = [
        (s, at)
        for p, (s, at) in job.bids.items()
        if p not in awarded
        and p not in job.excluded
        and p not in caught
        and s.message.expires_ms > now_ms
    ]
    kept.sort(
        key=lambda k: award_key(
            k[0].message, rep(k[0].message.provider), spec.max_price, now_ms, spec.deadline_ms
        )
    )
    if newcomers_last(job, config):
        # Stable: established providers keep their order, ahead of every newcomer.
        kept.sort(
            key=lambda k: (1, k[1]) if rep(k[0].message.provider).settled_jobs == 0 else (0, 0)
        )
    bids = [s for s, _ in kept]
    if spec.verification.mode == "exact" and bids:
        anchor = anchor_class(job, bids, config, caught)
        bids = [s for s in bids if s.message.determinism_class == anchor]
    if veterans_only or veterans_short(job, config):
        # Newcomers do not decide this job: the next award goes to an established bid, the
        # one that can stand in for an established replica lost, or make up the
        # established outputs an agreement needs, or break their tie (newcomers may
        # follow it); with none, no award (a newcomer's output would verify nothing, and
        # go unpaid): the job announces again for one.
        veterans, others = _by_probation(bids, config)
        bids = [*veterans, *others] if veterans else []
    elif veterans_first:
        # Established outputs agree but fall short of the redundancy: established bids
        # first (the cheapest bids may be free keys with one wrong output), then a
        # newcomer's, which can still complete the agreement (round 27, I2).
        veterans, others = _by_probation(bids, config)
        bids = [*veterans, *others]
    return bids


def _by_probation(
    bids: list[Signed[Bid]], config: RequesterConfig
) -> tuple[list[Signed[Bid]], list[Signed[Bid]]]:
    """``bids`` split into established providers' and newcomers', each in order."""
    veterans: list[Signed[Bid]] = []
    others: list[Signed[Bid]] = []
    for s in bids:
        (veterans if _past_probation(s.message.provider, config) else others).append(s)
    return veterans, others


def anchor_class(
    job: RequesterJob, bids: list[Signed[Bid]], config: RequesterConfig, caught: Caught
) -> str:
    """The one determinism class an exact job's replicas run in: the known answer's, else
    the first live replica's, else that of the best bid (``bids`` is best first) from a
    trusted provider (adaptive replication), else the class most established providers
    bid in, among those the class of the established bid with the strongest record
    (``_record``), else the best bid's. A bid's class is the bidder's word: were the
    best bid's class the anchor, two keys bidding the lowest price in a class of their own
    would filter the established provider out of the job; were it the best established
    bid's, one staked key and one free key would (round-6 review R6-7). Price never names
    the class: the established providers do, the most of them, then the strongest."""
    if job.award_known is not None:
        return job.award_known.determinism_class
    live = job.live()
    if live:
        return live[0].determinism_class
    if config.replication == "adaptive":
        for s in bids:
            if trusted(s.message.provider, config, caught):
                return s.message.determinism_class
    veterans = [s for s in bids if _past_probation(s.message.provider, config)]
    if veterans:
        count: dict[str, int] = {}
        for s in veterans:
            cls = s.message.determinism_class
            count[cls] = count.get(cls, 0) + 1
        # ``max`` keeps the first of equals: the best bid among equal records.
        best = max(
            veterans,
            key=lambda s: (
                count[s.message.determinism_class],
                _record(config.reputation(s.message.provider)),
            ),
        )
        return best.message.determinism_class
    return bids[0].message.determinism_class


def _record(rep: Reputation) -> tuple[int, int, int]:
    """How strong a provider's ledger record is: settled jobs, then stake, then score."""
    return (rep.settled_jobs, rep.stake, rep.score_permille)


def newcomers_last(job: RequesterJob, config: RequesterConfig) -> bool:
    """Whether keys with no settled job are awarded only after every established
    provider in ``job``, and among themselves oldest bid first: more of its awards than its
    budget were declined by such keys. A decline costs nothing and keys are free, so a
    peer bidding the lowest price from fresh keys, declining each award and bidding again
    from a new key, would otherwise take every award until ``MAX_AWARDS`` and fail the
    job; its fresh bids now queue behind the bids that were there before them."""
    rep = config.reputation
    declines = sum(
        1 for r in job.replicas if r.reason == _DECLINED and rep(r.provider).settled_jobs == 0
    )
    return declines > job.budget


def initial_order(
    job: RequesterJob, bids: list[Signed[Bid]], config: RequesterConfig, caught: Caught
) -> tuple[list[Signed[Bid]], int]:
    """The first awards, in order, and the number of replicas to run: the best
    ``redundancy`` bids, with a probation replica (``with_probation``); adaptive
    replication decides its own (``adaptive_order``)."""
    spec = job.spec
    job.veterans = max(job.veterans, veteran_bidders(job, config, caught))
    void_canary(job, bids)
    if config.replication == "adaptive" and job.award_known is None:
        return adaptive_order(job, bids, config, caught)
    order, n = with_probation(job, bids, spec.redundancy, config)
    audited = job.required > spec.redundancy  # decided again after every replica failed
    if n == 1 and order and (audited or fixed_audit(job, order, config)):
        audit = with_auditor(order, config)
        if audit is not None:
            job.required = 2
            return audit, 2
    return order, n


def with_auditor(order: list[Signed[Bid]], config: RequesterConfig) -> list[Signed[Bid]] | None:
    """``order`` with an auditor second, drawn (``rng``) among the established bids after
    the first; ``None`` without one. Drawn, not the best: the best priced next to the
    first was one person's second staked key whenever it bid so, which audited its own
    first key and learned of every audit before that key delivered (round 64, R64-3;
    under adaptive replication, round 67, J4)."""
    auditors = _auditors(order, config)
    if not auditors:
        return None
    auditor = config.rng.choice(auditors)
    return [order[0], auditor, *(s for s in order[1:] if s is not auditor)]


def void_canary(job: RequesterJob, bids: list[Signed[Bid]]) -> None:
    """A spot check's canary awarded, as its job would be, in a determinism class other
    than its answer's (an ``exact`` job's replicas run in one class, ``anchor_class``):
    its answer cannot judge outputs it cannot be compared with by commitment, so the
    canary checks nothing and is judged as a plain job (it still runs: not running it
    would tell it apart)."""
    if (
        job.spot_check
        and job.known is not None
        and job.spec.verification.mode == "exact"
        and bids
        and bids[0].message.determinism_class != job.known.determinism_class
    ):
        job.known = None


def fixed_audit(job: RequesterJob, order: list[Signed[Bid]], config: RequesterConfig) -> bool:
    """Fixed replication: whether a job of redundancy 1 whose first award goes to an
    established provider alone (no probation replica beside it) is audited: drawn at
    ``audit_permille`` (``rng``), when another established provider's bid is in hand
    and the budget holds a second replica. Its provider cannot tell: it runs replica 0
    either way. Without the audit nothing ever checked such a job (the daemon runs no
    spot checks), and one staked key with three self-dealt jobs was paid for wrong
    outputs of every job of redundancy 1 it won, never caught nor slashed; audited, it is
    outvoted (a third replica breaks the tie), caught by the requester and slashed on
    the evidence of two paid agreeing Results. The auditor is drawn among the other
    established bids (``initial_order``), and is established: a newcomer
    never outvotes an established provider, so a newcomer auditor would decide nothing,
    and a free key's wrong output there left an honest veteran's job undecided and
    unpaid."""
    return (
        job.spec.redundancy == 1
        and job.spec.verification.mode == "exact"
        and job.award_known is None
        and job.budget >= 2
        and _past_probation(order[0].message.provider, config)
        and bool(_auditors(order, config))
        and config.rng.randrange(1000) < config.audit_permille
    )


def drop_failed_audit(
    job: RequesterJob,
    config: RequesterConfig,
    now_ms: int,
    caught: Caught,
    *,
    final: bool = False,
) -> bool:
    """Whether an audit (``fixed_audit``) that cannot be completed was settled: one not
    verified (the caller's verdict), with no replica running and no established bid in
    hand to award (``final``: nothing more will be awarded, the job being decided now).

    - The other replica failed (declined, silent, aborted): the audit is dropped and the
      one output in decides, as the job would have been judged unaudited (``required``
      back to its redundancy). Kept, one staked key drawn as the auditor went silent and
      an honest veteran's job failed, unpaid (review round 64, R64-2).
    - The two outputs disagree: while the job can still be announced again for a third
      established replica (not ``final``), nothing is settled (kept bids expire 5 s
      after their window, and deciding on those in hand paid a cheat whose run outlasted
      them: round 65, H2). Once nothing more can be awarded, **neither is taken**: both
      are set aside (``Replica.set_aside``: not judged, paid, caught nor attested, and
      never awarded again in the job), and the job fails, saying so
      (``RequesterJob.disputed``). Any rule that takes one of two outputs nobody can
      tell apart is one a cheat can steer: taking the first replica's, a cheat first
      that delivered at once while the honest auditor's run left no time for a third
      was paid and never caught (rounds 66 I1, 67 J1); an attacker drawn as the auditor
      now only costs an honest first replica its payment for that job (a known limit)."""
    if (
        config.replication == "adaptive"
        or job.required <= job.spec.redundancy
        or job.known is not None  # a canary's answer judges its outputs (round 68, K2)
    ):
        return False
    if not final and any(r.state == ReplicaState.RUNNING for r in job.replicas):
        return False
    # Deciding now (``final``), a replica still running will not be judged (kept, a third
    # replica still running at the deadline failed the job with nobody paid: round 66).
    live = [r for r in job.live() if not final or r.state != ReplicaState.RUNNING]
    if not live or len(live) > 2:
        return False  # (every replica here has an output: running ones are not)
    if not final and candidates(job, config, now_ms, caught, veterans_only=True):
        return False  # an established bid can still stand in for the auditor, or decide
    if len(live) == 2:
        if not final:
            return False  # announced again for a third established replica (``fill``)
        for r in live:
            r.state = ReplicaState.FAILED
            r.reason = _SET_ASIDE
            job.excluded.add(r.provider)  # never awarded again here (round 67, J3)
            job.bids.pop(r.provider, None)
        job.disputed = (
            "its audit disagreed and no established provider could decide between the two "
            "outputs: neither is taken"
        )
    job.required = 0
    job.target = 1
    return True


def _auditors(order: list[Signed[Bid]], config: RequesterConfig) -> list[Signed[Bid]]:
    """The established providers' bids after the first (one per provider)."""
    first = order[0].message.provider
    return [
        s
        for s in order[1:]
        if s.message.provider != first and _past_probation(s.message.provider, config)
    ]


def veteran_bidders(job: RequesterJob, config: RequesterConfig, caught: Caught) -> int:
    """Established providers that bid for ``job`` (bids kept, in any class) or were
    awarded a replica of it. Counted in any class: a staked key bidding in a class of its
    own, with a record it made stronger than the honest provider's (settles between its
    own keys are free), would otherwise name the anchor class and be the one established
    provider of the job. A caught provider's bid (kept before it was caught) is not
    counted: it will not be awarded."""
    held = (set(job.bids) - caught.keys()) | {r.provider for r in job.replicas}
    return sum(1 for p in held if _past_probation(p, config))


def with_probation(
    job: RequesterJob, bids: list[Signed[Bid]], n: int, config: RequesterConfig
) -> tuple[list[Signed[Bid]], int]:
    """The best ``n`` bids, plus probation replicas while fewer of the chosen are
    established than an agreement needs (``veterans_needed``, at least one): the best
    established bids not chosen, moved right behind them (newcomers never outvote them),
    while the budget allows; with no established bid at all and fewer than two chosen,
    the next bid."""
    chosen, rest = bids[:n], bids[n:]
    if not chosen:
        return bids, n
    have = sum(1 for s in chosen if _past_probation(s.message.provider, config))
    want = max(1, veterans_needed(job, config, n, awarding=True))
    veterans = [s for s in rest if _past_probation(s.message.provider, config)]
    extra = veterans[: max(0, min(want - have, job.budget - n))]
    if extra:
        rest = [s for s in rest if all(s is not v for v in extra)]
        return [*chosen, *extra, *rest], n + len(extra)
    if not have and n < job.budget and len(chosen) < 2 and rest:
        return bids, n + 1
    return bids, n


def adaptive_order(
    job: RequesterJob, bids: list[Signed[Bid]], config: RequesterConfig, caught: Caught
) -> tuple[list[Signed[Bid]], int]:
    """Adaptive replication's first awards: the best trusted bid first when there is
    one, alone (``solo``) unless an audit is drawn (``audit_permille``: a second replica,
    two agreeing results); with no trusted bid, the best ``max(2, asked)`` bids and as
    many agreeing results (one replica is for trusted providers only)."""
    found = [s for s in bids if trusted(s.message.provider, config, caught)]
    job.solo = False
    if not found:
        # Newcomers alone get an established provider's probation replica, as under
        # fixed replication: two colluding newcomers never decide a job one bid for.
        job.required = max(2, job.asked)
        return with_probation(job, bids, job.required, config)
    first = found[0]
    order = [first, *(s for s in bids if s is not first)]
    if config.rng.randrange(1000) >= config.audit_permille:
        job.solo = True
        job.required = 1
        return order, 1
    job.required = max(2, job.asked)
    return with_probation(job, with_auditor(order, config) or order, job.required, config)


def required(job: RequesterJob, config: RequesterConfig) -> int:
    """Agreeing results that verify the job: the signed redundancy under fixed
    replication (two for an audited job, ``fixed_audit``); under adaptive, 1 while the
    job runs on one trusted provider (every delivered result a trusted provider's), else
    what was decided at the first award (``max(2, asked)``)."""
    if config.replication != "adaptive":
        return max(job.spec.redundancy, job.required)  # ``required``: an audit (fixed_audit)
    if job.solo:
        if all(r.trusted for r in job.replicas if r.output is not None):
            return 1
        return max(2, job.asked)
    return job.required or max(2, job.asked)


def trusted(provider: bytes, config: RequesterConfig, caught: Caught) -> bool:
    """Adaptive replication: whether a job may run on ``provider`` alone."""
    if provider in caught:
        return False
    rep = config.reputation(provider)
    return (
        rep.settled_jobs >= config.trusted_jobs
        and rep.score_permille >= config.trusted_score_permille
        and rep.stake >= config.trusted_stake
        and rep.failures <= config.trusted_max_failures
    )


def catch(provider: bytes, config: RequesterConfig, caught: Caught) -> None:
    """Remember a provider caught with a wrong result (bounded, oldest forgotten)."""
    caught.pop(provider, None)
    caught[provider] = None
    while len(caught) > max(0, config.caught_limit):
        del caught[next(iter(caught))]


def veteran(rep: Replica, config: RequesterConfig) -> bool:
    """Whether a replica counts as an established provider's for its job: its provider
    was established when it was awarded (``Replica.established``), and its stake is still
    bonded. Its settled jobs are not read again: anyone holding one of its Bids can pay it
    (a settle of their own), and a payment once recomputed its decayed record, so that a
    stranger's payout made an awarded veteran a newcomer mid-job, which two fresh keys
    then outvoted, paid for a wrong output and had slashed (round 24, R24B-1). Its stake
    leaves only by its own unstake or a slash: either ends it (round 10, R10-5)."""
    return rep.established and config.reputation(rep.provider).stake >= config.probation_stake


def veteran_replicas(job: RequesterJob, config: RequesterConfig) -> set[int]:
    """Replicas of providers past probation (``veteran``), failed ones included."""
    return {r.index for r in job.replicas if veteran(r, config)}


def probation_bound(job: RequesterJob, config: RequesterConfig) -> bool:
    """Whether only an agreement that holds an established provider's output can decide
    ``job``: it has no known answer and an established provider was awarded a replica of
    it (running, delivered, failed or declined). Were the bond to end with that replica,
    whoever can make it fail (fill its slots with refundable jobs of their own, so that it
    declines the award) would hand the job back to newcomers, possibly one person's keys.
    Jobs no established provider was ever awarded are decided by newcomers (a young
    network must work: specs/marketplace.md, "Known limits"). Established as awarded
    (``Replica.established``): one whose stake leaves mid-job loses its vote
    (``veteran``), not the job its bond, since two staked keys can have an honest veteran
    slashed in a job of their own, and two free keys then decided the job it was bonding
    (round 25, G3)."""
    return job.known is None and any(r.established for r in job.replicas)


def veterans_needed(
    job: RequesterJob, config: RequesterConfig, agreeing: int = 0, *, awarding: bool = False
) -> int:
    """Established providers' outputs an agreement of ``job`` must hold: none with a known
    answer; two when it needs at least two agreeing results (``agreeing``, else
    ``required``) and two established providers bid (``veteran_bidders``, counted when the
    first awards were chosen), or when an established provider awarded a replica lost its
    stake since (``unseated``); else one once an established provider was awarded
    (``probation_bound``); else none (a young network: newcomers decide). One staked key
    beside free ones must not decide a job a second established provider bid for (round-6
    review R6-7): that takes two staked keys (specs/marketplace.md, "Known limits"). Nor
    one whose honest veteran was unseated by a framing slash mid-job (round 25, G3).
    ``awarding``: for the first awards, where a spot check's canary counts as its job
    (``RequesterJob.award_known``); its answer alone judges its outputs."""
    if (job.award_known if awarding else job.known) is not None:
        return 0
    if job.veterans >= 2 and (agreeing or required(job, config)) >= 2:
        return 2
    if unseated(job, config):
        return 2
    return 1 if probation_bound(job, config) else 0


def unseated(job: RequesterJob, config: RequesterConfig) -> bool:
    """Whether a provider established at its award in ``job`` has since lost the stake
    that made it so (its own unstake, or a slash): it votes no more (``veteran``)."""
    return any(r.established and not veteran(r, config) for r in job.replicas)


def veterans_short(job: RequesterJob, config: RequesterConfig) -> bool:
    """Awards were made and fewer of the job's live replicas are established providers'
    than an agreement needs (``veterans_needed``): the next award must be an established
    provider's (``candidates`` offers no other bid). A newcomer's output could verify
    nothing, and would go unpaid."""
    need = veterans_needed(job, config)
    if not need or not job.replicas:
        return False
    return sum(1 for r in job.live() if veteran(r, config)) < need
