"""Prices and award scores, in integers only (no float decides who is paid).

The requester ranks bids by :func:`award_key`; the provider prices with :func:`bid_price`
and estimates its run time with :func:`estimate_run_ms`. All are pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol import Bid, JobSpec, content_hash


@dataclass(frozen=True, slots=True)
class Reputation:
    """What the requester knows of a provider, from the ledger (computed elsewhere).

    ``score_permille`` is 0 (worst) .. 1000 (best); ``settled_jobs`` counts the provider's
    settled replicas, whoever paid them; with ``stake`` it tells newcomers (probation) from
    established providers (``scheduler.established``); ``failures`` is its failure weight in
    whole units, rounded down, decayed as the score is (a negative attestation adds up to
    1, in proportion to the job's payout up to 800, a slash 4: specs/ledger.md,
    "Reputation"); ``stake`` is what it has bonded, and ``unbonding`` what it is unbonding,
    as ``(release height, amount)`` pairs: a slash takes from both until the release, and
    both count until then as what it holds as a slash's witness.
    """

    score_permille: int
    settled_jobs: int
    failures: int = 0
    stake: int = 0
    unbonding: tuple[tuple[int, int], ...] = ()

    def held(self, after: int = -1) -> int:
        """What a slash landing after height ``after`` can take from it, and what it then
        holds as a slash's witness: its stake and what it unbonds past that height."""
        return self.stake + sum(amount for release, amount in self.unbonding if release > after)


#: The reputation of a provider nothing is known about.
NEWCOMER = Reputation(score_permille=500, settled_jobs=0)


def award_key(
    bid: Bid, rep: Reputation, max_price: int, now_ms: int, deadline_ms: int
) -> tuple[int, int, bytes]:
    """Sort key of a bid: lower is better.

    ``cost = price * (2000 - rep) / 1000 + max_price * time_used / time_left / 4``, where
    ``time_used`` is the time from now to the bid's estimated finish and ``time_left`` the
    time from now to the deadline: a perfect reputation counts the price once, a zero one
    twice, and finishing at the deadline adds a quarter of the maximum price. Ties go to the
    earlier estimated finish, then to the smaller BLAKE2b hash of the provider's key.
    """
    rep_p = min(max(rep.score_permille, 0), 1000)
    cost = bid.price * (2000 - rep_p) // 1000
    left = max(1, deadline_ms - now_ms)
    used = min(max(0, bid.est_finish_ms - now_ms), left)
    cost += max_price * used // left // 4
    return (cost, bid.est_finish_ms, content_hash(bid.provider))


def bid_price(
    floor: int,
    active: int,
    max_concurrency: int,
    bench_score: int,
    reference_bench: int,
    load_markup_permille: int,
) -> int:
    """A provider's asking price for one replica.

    ``floor * (1000 + load_markup * active / max_concurrency + bench_premium) / 1000`` where
    the bench premium is ``min(250, 250 * bench_score / reference_bench)`` per mille: a busier
    node asks more, a faster one a little more. Never below ``floor``.
    """
    load = load_markup_permille * active // max(1, max_concurrency)
    premium = min(250, 250 * bench_score // max(1, reference_bench))
    return max(floor, floor * (1000 + load + premium) // 1000)


def estimate_run_ms(spec: JobSpec, bench_score: int, base_ms: int) -> int:
    """Estimated run time: a fixed start-up plus work proportional to model and input size
    over the node's benchmark score (bytes per millisecond per score unit of 1)."""
    work = spec.model_size + sum(i.size for i in spec.inputs)
    return base_ms + work // max(1, bench_score)
