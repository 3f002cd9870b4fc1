"""Why nothing happened: the requester's no-bid report and the provider's idle report.

Both are pure functions over what the machines recorded, so a CLI or dashboard can call them
at any time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from protocol import NOBID_REASONS, NoBid, NoBidReason

#: Reasons the requester adds to the providers' own (protocol.NOBID_REASONS).
NO_PROVIDER_KNOWN = "no_provider_known"
NO_RESPONSE = "no_response"

_ADVICE = {
    "busy": "every provider that answered was busy: retry later or raise max_price",
    "price_below_floor": "max_price is below the providers' floors: raise it to at least {floor}",
    "requirements_unmet": "no provider meets the requirements (device, memory, execution "
    "provider; providers refuse tolerance mode by default): relax them, use exact mode or "
    "pick another capability class",
    "runtime_unsupported": "no provider runs this runtime: export the model to another runtime",
    "class_not_served": "the providers reached do not serve this capability class",
    "deadline_too_short": "providers cannot finish before the deadline: allow more time",
    "untrusted_refused": "providers refuse untrusted jobs (no network-blocking sandbox): "
    "use providers that trust you or that have a stronger sandbox",
    "shutting_down": "the providers reached are shutting down: retry later",
    NO_PROVIDER_KNOWN: "no provider of this capability class is known: check the class name "
    "and that the node is connected to the network",
    NO_RESPONSE: "providers were asked but none answered before the bid window closed: "
    "lengthen bid_window_ms or check connectivity",
}


@dataclass(frozen=True, slots=True)
class NoBidReport:
    """Why a job got no (usable) bids: counts per reason and advice, most common first."""

    providers_asked: int
    reasons: tuple[tuple[str, int], ...]
    lowest_floor: int | None
    advice: tuple[str, ...]

    @property
    def primary(self) -> str:
        """The most common reason."""
        return self.reasons[0][0]


def explain_no_bids(nobids: Iterable[NoBid], providers_asked: int) -> NoBidReport:
    """Aggregate providers' NoBids (one per provider) into a report for the requester."""
    latest: dict[bytes, NoBid] = {}
    for nb in nobids:
        latest[nb.provider] = nb
    counts = Counter(nb.reason for nb in latest.values())
    floors = [nb.price_floor for nb in latest.values() if nb.reason == "price_below_floor"]
    lowest = min(floors) if floors else None
    if not counts:
        counts[NO_PROVIDER_KNOWN if providers_asked == 0 else NO_RESPONSE] = 1
    order = {r: i for i, r in enumerate((*NOBID_REASONS, NO_PROVIDER_KNOWN, NO_RESPONSE))}
    reasons = tuple(sorted(counts.items(), key=lambda kv: (-kv[1], order.get(kv[0], 99))))
    advice = tuple(
        _ADVICE.get(r, r).format(floor=lowest if lowest is not None else "?") for r, _ in reasons
    )
    return NoBidReport(providers_asked, reasons, lowest, advice)


# --- the provider's side --------------------------------------------------------------


class BidOutcome(StrEnum):
    """What became of a provider's bid (an announcement it did not bid on records its
    NoBid reason instead)."""

    WON = "won"
    LOST = "lost"
    #: Awarded, but refused: every slot was in use, or the bid had expired.
    DECLINED = "declined"


@dataclass(frozen=True, slots=True)
class Seen:
    """One announcement a provider saw and what became of it."""

    job_id: bytes
    at_ms: int
    outcome: NoBidReason | BidOutcome
    max_price: int
    our_price: int


@dataclass(frozen=True, slots=True)
class IdleReport:
    """Answer to "why am I not getting jobs": counts per outcome over a window, and hints."""

    since_ms: int
    announcements: int
    outcomes: tuple[tuple[str, int], ...]
    hints: tuple[str, ...]


def why_no_jobs(history: Sequence[Seen], now_ms: int, window_ms: int) -> IdleReport:
    """Explain a provider's recent lack of work from its own record of announcements (each
    job counted once, by its latest outcome, over the last ``window_ms``)."""
    since = now_ms - window_ms
    latest: dict[bytes, Seen] = {}  # a re-announced job counts once, by its latest outcome
    for s in history:
        if s.at_ms >= since:
            latest[s.job_id] = s
    recent = list(latest.values())
    counts = Counter(s.outcome for s in recent)
    hints: list[str] = []
    if not recent:
        hints.append(
            "no job announcements arrived: check the node is connected, subscribed to its "
            "capability classes, and that its advert is published"
        )
    n = len(recent)
    if counts["price_below_floor"]:
        prices = sorted(s.max_price for s in recent if s.outcome == "price_below_floor")
        hints.append(
            f"{counts['price_below_floor']} of {n} jobs paid less than your price floor "
            f"(median max_price {prices[len(prices) // 2]}): lower price_floor"
        )
    lost, declined = counts[BidOutcome.LOST], counts[BidOutcome.DECLINED]
    if lost:
        ours = sorted(s.our_price for s in recent if s.outcome == BidOutcome.LOST)
        hints.append(
            f"{lost} bids lost to other providers (your median bid {ours[len(ours) // 2]}):"
            " lower your price or improve reputation and speed"
        )
    if counts["busy"] or declined:
        hints.append(
            f"{counts['busy'] + declined} jobs refused while all slots were in use: "
            "raise max_concurrency if the machine has headroom"
        )
    for reason in ("requirements_unmet", "runtime_unsupported", "class_not_served"):
        if counts[reason]:
            hints.append(f"{counts[reason]} jobs did not match this node ({reason})")
    if counts["deadline_too_short"]:
        hints.append(f"{counts['deadline_too_short']} jobs had deadlines this node cannot meet")
    if counts["untrusted_refused"]:
        hints.append(
            f"{counts['untrusted_refused']} jobs refused as untrusted: enable a sandbox layer "
            "that blocks the network"
        )
    outcomes = tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return IdleReport(since, n, outcomes, tuple(hints))
