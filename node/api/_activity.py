"""What a contributor's work looked like, as its dashboard shows it (specs/dashboard.md).

:class:`Activity` follows the provider machine's effects (``EffectRunner.observers``): a
``RunJob`` starts a run, the ``Deliver`` of its Result ends it (with the failure's
reason when it failed), ``NotifyUser`` ``paid`` and ``closed`` say what it earned and how
its work ended. It keeps the runs in progress, the latest finished jobs (bounded) and an
:class:`EarningsBook` of its payments, summed per minute (per day past a week). No I/O
and no clock of its own: each call takes the time, and a payment is also handed to
``on_paid`` (the dashboard appends it to ``earnings.jsonl`` so that the totals survive a
restart).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import protocol
import scheduler

#: Finished jobs the dashboard lists.
RECENT_JOBS = 50
#: Points of the earnings chart at most (payments are summed into buckets beyond this).
CHART_POINTS = 240
DAY_MS = 86_400_000
MINUTE_MS = 60_000
#: Payments of this long ago are kept to the minute; older ones are summed per day.
FINE_FOR_MS = 8 * DAY_MS


@dataclass(slots=True)
class JobEntry:
    """One job this contributor was awarded, while it runs and after it ended."""

    job_id: bytes
    requester: bytes
    price: int
    started_ms: int
    deadline_ms: int
    #: When the bid said the result would be delivered (for a progress estimate).
    est_finish_ms: int
    ran_ms: int | None = None
    ended_ms: int | None = None
    #: ``running``, ``delivered`` (waiting for pay), ``paid``, ``failed`` or ``unpaid``.
    outcome: str = "running"
    reason: str = ""
    paid: int = 0

    def view(self, now_ms: int) -> dict[str, Any]:
        end = self.ran_ms if self.ran_ms is not None else now_ms
        span = max(1, self.est_finish_ms - self.started_ms)
        progress = 1.0 if self.ran_ms is not None else min(0.99, (end - self.started_ms) / span)
        return {
            "job_id": self.job_id.hex(),
            "requester": protocol.peer_id(self.requester),
            "price": self.price,
            "started_ms": self.started_ms,
            "duration_ms": max(0, end - self.started_ms),
            "deadline_ms": self.deadline_ms,
            "progress": round(max(0.0, progress), 3),
            "outcome": self.outcome,
            "reason": self.reason,
            "paid": self.paid,
            "ended_ms": self.ended_ms,
        }


class EarningsBook:
    """Payments received, summed into buckets ``(start_ms, amount)`` in time order, and
    their total. A bucket is a minute for the last ``FINE_FOR_MS`` (today and the week are
    read from these) and a day before that: at most 11,520 minute buckets and one a day of
    the node's life, however many payments (one entry a payment grew by about 3 KB a
    second at 20 jobs a second, and every snapshot summed them all)."""

    def __init__(self, entries: Iterable[tuple[int, int]] = ()) -> None:
        self.entries: list[tuple[int, int]] = []
        self.total = 0
        self._days = 0  # the day buckets, at the front of ``entries``
        for at_ms, amount in sorted(entries):
            self.add(at_ms, amount)

    def add(self, at_ms: int, amount: int) -> None:
        if self.entries and at_ms < self.entries[-1][0]:
            at_ms = self.entries[-1][0]  # a clock step back keeps the order
        start = at_ms - at_ms % MINUTE_MS
        if len(self.entries) > self._days and self.entries[-1][0] == start:
            self.entries[-1] = (start, self.entries[-1][1] + amount)
        else:
            self.entries.append((start, amount))
        self.total += amount
        self._coarsen(at_ms - FINE_FOR_MS)

    def _coarsen(self, before_ms: int) -> None:
        """Sum the minute buckets that start before ``before_ms`` into day buckets."""
        entries = self.entries
        while self._days < len(entries) - 1 and entries[self._days][0] < before_ms:
            start, amount = entries[self._days]
            day = start - start % DAY_MS
            if self._days and entries[self._days - 1][0] == day:
                entries[self._days - 1] = (day, entries[self._days - 1][1] + amount)
                del entries[self._days]
            else:
                entries[self._days] = (day, amount)
                self._days += 1

    def since(self, start_ms: int) -> int:
        """Paid since ``start_ms`` (to the minute: a minute bucket counts if it starts at or
        after it)."""
        paid = 0
        for t, a in reversed(self.entries):
            if t < start_ms:
                break
            paid += a
        return paid

    def summary(self, now_ms: int, day_start_ms: int) -> dict[str, Any]:
        """Today (since ``day_start_ms``, local midnight), the last 7 days, all time, and
        the cumulative total over time as at most ``CHART_POINTS`` ``[seconds, total]``
        points (one per bucket of time)."""
        points: list[list[int]] = []
        if self.entries:
            first = self.entries[0][0]
            bucket = max(1, (now_ms - first) // CHART_POINTS + 1)
            running = 0
            for t, a in self.entries:
                running += a
                slot = first + (t - first) // bucket * bucket
                if points and points[-1][0] == slot // 1000:
                    points[-1][1] = running
                else:
                    points.append([slot // 1000, running])
            points.append([now_ms // 1000, running])
        return {
            "today": self.since(day_start_ms),
            "week": self.since(now_ms - 7 * DAY_MS),
            "all": self.total,
            "chart": points,
        }


def local_day_start_ms(now_ms: int) -> int:
    """Local midnight of the day of ``now_ms`` (the owner's "today")."""
    t = time.localtime(now_ms / 1000)
    return int(time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1)) * 1000)


@dataclass
class Activity:
    """A contributor's runs, finished jobs and earnings (see the module's text)."""

    clock: Callable[[], int]
    book: EarningsBook = field(default_factory=EarningsBook)
    on_paid: Callable[[int, int, bytes], None] = lambda at_ms, amount, job_id: None
    running: dict[bytes, JobEntry] = field(default_factory=dict)
    recent: deque[JobEntry] = field(default_factory=lambda: deque(maxlen=RECENT_JOBS))
    #: Bumped at every change (the dashboard sends a snapshot only when something moved).
    version: int = 0

    def observe(self, machine: str, effect: scheduler.Effect) -> None:
        """``EffectRunner``'s observer: the provider machine's effects."""
        if machine != "provider":
            return
        match effect:
            case scheduler.RunJob():
                self._started(effect)
            case scheduler.Deliver():
                self._delivered(effect.result.message)
            case scheduler.AbortJob():
                entry = self.running.get(effect.job_id)
                if entry is not None and entry.ran_ms is None:
                    entry.ran_ms = self.clock()
                    entry.reason = entry.reason or "the run was stopped"
                    self.version += 1
            case scheduler.NotifyUser(event=scheduler.UserEvent.PAID):
                self._paid(effect.job_id, int(effect.detail))
            case scheduler.NotifyUser(event=scheduler.UserEvent.CLOSED):
                self._closed(effect.job_id, effect.detail)
            case _:
                pass

    def _started(self, effect: scheduler.RunJob) -> None:
        award = effect.award.message
        now = self.clock()
        self.running[award.job_id] = JobEntry(
            job_id=award.job_id,
            requester=award.requester,
            price=award.price,
            started_ms=now,
            deadline_ms=award.deadline_ms,
            est_finish_ms=max(now + 1, min(award.deadline_ms, now + 60_000)),
        )
        self.version += 1

    def set_estimate(self, job_id: bytes, est_finish_ms: int) -> None:
        """The bid's expected delivery time (the provider's work knows it)."""
        entry = self.running.get(job_id)
        if entry is not None and est_finish_ms > entry.started_ms:
            entry.est_finish_ms = est_finish_ms

    def _delivered(self, result: protocol.Result) -> None:
        entry = self.running.get(result.job_id)
        if entry is None or entry.outcome != "running":
            return  # a resend of the same Result
        entry.ran_ms = self.clock()
        if result.outcome == "ok":
            entry.outcome = "delivered"
        else:
            entry.outcome = "failed"
            entry.reason = (
                f"{result.outcome}: {result.message}" if result.message else str(result.outcome)
            )
        self.version += 1

    def _paid(self, job_id: bytes, amount: int) -> None:
        now = self.clock()
        self.book.add(now, amount)
        entry = self.running.get(job_id)
        if entry is not None:
            entry.paid += amount
        self.version += 1
        self.on_paid(now, amount, job_id)

    def _closed(self, job_id: bytes, end: str) -> None:
        entry = self.running.pop(job_id, None)
        if entry is None:
            return
        now = self.clock()
        entry.ended_ms = now
        if entry.ran_ms is None:
            entry.ran_ms = now
        if entry.paid and end == "paid":
            entry.outcome = "paid"
        elif entry.outcome != "failed":
            entry.outcome = "unpaid" if entry.outcome == "delivered" else "failed"
            entry.reason = entry.reason or end
        if entry.outcome == "failed" and not entry.reason:
            entry.reason = end
        self.recent.appendleft(entry)
        self.version += 1
