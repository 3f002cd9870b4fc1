"""What a provider does with an announcement, and the load it matches and prices it on:
plain functions of a :class:`~scheduler.Provider`, bound back as its methods
(specs/marketplace.md, "Announcement"; specs/daemon.md, "Provider bounds on
announcements"). Bids are counted as they come and go (``BidBook``), never scanned per
announcement."""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol import Bid, JobSpec, NoBid, NoBidReason, Signed, sign

from ._effects import CancelTimer, Effect, Misbehaved, Send, SetTimer, TimerKey, TimerKind
from ._matching import match
from ._pricing import bid_price, estimate_run_ms
from ._provider_work import Work, remember_latest
from ._reasons import Seen

if TYPE_CHECKING:
    from ._ledger import EscrowView
    from ._provider import Provider

#: Earlier bids for one job that an award may still name.
_KEEP_BIDS = 4
#: Announcements whose times are absurd are refused unanswered (Misbehaved): a bid window
#: longer than this, or a deadline further ahead than this (specs/marketplace.md).
MAX_BID_WINDOW_MS = 60_000
MAX_DEADLINE_AHEAD_MS = 24 * 3_600_000
#: A bid counts as pending load for at most this long after it was made, whatever the
#: requester's bid window (a far window must not keep a provider "busy").
MAX_PENDING_MS = 10_000
#: Announcements remembered as answered (the oldest is forgotten first).
MAX_ANSWERED = 4_096
#: An announcement whose escrow expires more than this many blocks after the last block
#: seen is refused like absurd times: a deadline 24 h ahead at the fastest blocks (50 ms)
#: with the claim window and margins is about 1.73 million blocks.
MAX_ESCROW_AHEAD_BLOCKS = 2_000_000
#: Open bids for jobs whose escrow the ledger has not shown, from all requesters together:
#: past this, a requester with no escrow seen is answered NoBid ``busy`` (no work kept).
MAX_UNFUNDED_BIDS = 256
#: A requester seen locking still gets bids past ``MAX_UNFUNDED_BIDS`` (its escrows land a
#: block after its announcements), but at most this many open for its own jobs with no
#: escrow seen, and only while all such bids are fewer than ``MAX_UNFUNDED_BIDS_ALL``: one
#: cheap lock must not buy unbounded free bids.
MAX_UNFUNDED_BIDS_PER_FUNDER = 64
MAX_UNFUNDED_BIDS_ALL = 2 * MAX_UNFUNDED_BIDS
#: Requesters remembered as having locked an escrow for a job we bid on.
MAX_FUNDERS = 4_096


def pending(p: Provider, now_ms: int, *, besides: bytes = b"") -> int:
    """Bids whose requester's bid window is still open (other than job ``besides``): the
    awards that may come any moment. Older bids are mostly lost (losers are not told)
    and do not count as load."""
    book = p._bids
    book.expire(now_ms, p.work)
    return book.funded + book.unfunded - p._counted(besides)


def load_for(p: Provider, requester: bytes, now_ms: int, *, besides: bytes = b"") -> int:
    """The pending bids that count as load for an announcement of ``requester``: its
    own in full; every other requester's together up to ``max_pending_per_requester``
    (each one's up to that share while the job's escrow is on the ledger, and the bids
    for jobs with no escrow seen yet all together up to it too). So nobody else, one
    requester, many keys that lock nothing, or both, can make us busy for a requester:
    counted side by side, one key locking two escrows every few seconds (refunded) and
    two free keys filled the capacity, and every honest requester of the class was
    answered ``busy`` (review round 63, G2). Counted, not scanned: the cost does not grow
    with the bids open."""
    book = p._bids
    book.expire(now_ms, p.work)
    book.reshare(p.max_pending_per_requester)
    share = book.share
    funded, unfunded = book.pending_of(requester)
    others = book.funded_capped - min(funded, share)
    others_unfunded = book.unfunded - unfunded
    own = funded + unfunded
    work = p.work.get(besides)
    if work is not None and work.counted:
        if work.spec.requester == requester:
            own -= 1
        elif work.funded:
            f, _ = book.pending_of(work.spec.requester)
            others -= min(f, share) - min(f - 1, share)
        else:
            others_unfunded -= 1
    return own + min(others + min(others_unfunded, share), share)


def priced_load(p: Provider, now_ms: int) -> int:
    """The pending bids a price counts: the funded ones, and the others up to
    ``max_pending_per_requester``, so that announcements that lock nothing do not
    raise every honest requester's price."""
    book = p._bids
    book.expire(now_ms, p.work)
    book.reshare(p.max_pending_per_requester)
    return book.funded + min(book.unfunded, book.share)


def counted(p: Provider, job_id: bytes) -> int:
    work = p.work.get(job_id) if job_id else None
    return 1 if work is not None and work.counted else 0


def on_announce(p: Provider, signed: Signed[JobSpec], now_ms: int) -> list[Effect]:
    spec = signed.message
    job_id = signed.id
    if spec.requester == p.me:
        # Our own node's job (a requester and contributor in one): an escrow never pays
        # its own owner, so a replica of ours could never be paid. Not bid on.
        return []
    work = p.work.get(job_id)  # receive() dropped copies and jobs past BIDDING
    p._answered.pop(job_id, None)
    while len(p._answered) >= MAX_ANSWERED:
        del p._answered[next(iter(p._answered))]
    if (
        spec.bid_window_ms > MAX_BID_WINDOW_MS
        or spec.deadline_ms > now_ms + MAX_DEADLINE_AHEAD_MS
        # from the best head known: a provider still syncing must not blame honest
        # requesters for escrows counted from the chain's real height
        or spec.escrow_expiry_height > max(p.height, p.head) + MAX_ESCROW_AHEAD_BLOCKS
    ):
        # remembered briefly, so that its copies are dropped before a signature check
        p._answered[job_id] = (now_ms, now_ms + MAX_BID_WINDOW_MS, MAX_BID_WINDOW_MS)
        return [Misbehaved(spec.requester, "an announcement with absurd times")]
    p._answered[job_id] = (now_ms, spec.deadline_ms, spec.bid_window_ms)
    cfg = p.config
    run_ms = estimate_run_ms(spec, cfg.bench_score, cfg.base_run_ms)
    run_ms += cfg.start_ms.get(spec.runtime, 0)
    refusal = match(
        spec,
        cfg,
        active=p.active,
        bidding=p.load_for(spec.requester, now_ms, besides=job_id),
        now_ms=now_ms,
        run_ms=run_ms,
        draining=p.draining,
    )
    escrow = cfg.escrow_of(job_id)
    if escrow is not None and escrow.paid_to(p.me) and work is None:
        # the ledger pays a provider once an escrow: a replica more of a job that paid us
        # could never be paid (review round 56, F1); not bid on
        return []
    funded = p._funded(spec, escrow)
    if refusal is None and work is None and not funded:
        refusal = unfunded_refusal(p, spec.requester)
    if refusal is not None:
        reason, detail = refusal
        nobid = NoBid(job_id, p.me, reason, detail, cfg.price_floor)
        p.history.append(Seen(job_id, now_ms, reason, spec.max_price, 0))
        effects: list[Effect] = [Send(spec.requester, sign(nobid, cfg.key, cfg.chain_id))]
        if work is not None:  # a re-announcement we can no longer take
            p._bids.drop(work)
            del p.work[job_id]
            effects.append(CancelTimer(TimerKey(TimerKind.BID, job_id)))
        return effects
    # Open bids count as half-taken slots: a node with many pending bids asks more
    # (those for jobs with no escrow seen, up to half the open-bid capacity).
    load = p.active + p._priced_load(now_ms) // max(1, cfg.overbook)
    price = bid_price(
        cfg.price_floor,
        min(cfg.max_concurrency, load),
        cfg.max_concurrency,
        cfg.bench_score,
        cfg.reference_bench,
        cfg.load_markup_permille,
    )
    bid = Bid(
        job_id=job_id,
        provider=p.me,
        price=max(1, min(price, spec.max_price)),  # a claim pays at least 1
        est_finish_ms=now_ms + spec.bid_window_ms + run_ms,
        determinism_class=cfg.class_for(spec),
        bench_score=cfg.bench_score,
        expires_ms=now_ms + spec.bid_window_ms + cfg.bid_validity_ms,
    )
    signed_bid = sign(bid, cfg.key, cfg.chain_id)
    window_end = now_ms + min(spec.bid_window_ms, MAX_PENDING_MS)
    if work is None:
        work = p.work[job_id] = Work(signed, signed_bid, window_end, funded=funded)
        p._bids.add(work)
    else:  # a re-announcement: a fresh bid; an award for a recent one still counts
        work.older = (*work.older[-(_KEEP_BIDS - 1) :], work.bid)
        work.bid = signed_bid
        work.window_end_ms = window_end
        if funded:
            p._bids.fund(work)
        p._bids.renew(work)
    return [
        Send(spec.requester, signed_bid),
        SetTimer(bid.expires_ms, TimerKey(TimerKind.BID, job_id)),
    ]


def unfunded_refusal(p: Provider, requester: bytes) -> tuple[NoBidReason, str] | None:
    """Why a new bid for a job of ``requester`` whose escrow is not on the ledger is
    refused (``busy``), if it is. Announcements cost nothing: such bids are made up to
    ``MAX_UNFUNDED_BIDS`` in all; past it, only for a requester seen locking (a funded job
    is never refused here), up to ``MAX_UNFUNDED_BIDS_PER_FUNDER`` of its own and
    ``MAX_UNFUNDED_BIDS_ALL`` in all. No work is kept for a refused one."""
    book = p._bids
    n = book.unfunded_open
    why = f"{n} bids open for jobs with no escrow on the ledger"
    if requester not in p._funders:
        return ("busy", why) if n >= MAX_UNFUNDED_BIDS else None
    if n >= MAX_UNFUNDED_BIDS_ALL:
        return "busy", why
    own = book.unfunded_open_of(requester)
    if own >= MAX_UNFUNDED_BIDS_PER_FUNDER:
        return "busy", f"{own} bids open for your jobs with no escrow on the ledger"
    return None


def funded(p: Provider, spec: JobSpec, escrow: EscrowView | None) -> bool:
    """Whether ``escrow`` (the job's, as the ledger shows it) is locked by its requester and
    open (the requester is then remembered as one that locks)."""
    if escrow is None or escrow.owner != spec.requester or not escrow.is_open:
        return False
    p._funder(spec.requester)
    return True


def funder(p: Provider, requester: bytes) -> None:
    remember_latest(p._funders, requester, MAX_FUNDERS)
