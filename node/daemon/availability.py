"""When a contributor may work: the owner's pause, the schedule, and pause-on-use.

A pure machine (no I/O, no clock of its own): the driver (``owner_use.OwnerUse`` and the
API's pause and resume) hands it what it saw and the time, and it answers with the new
:class:`Verdict` when paused-ness or its reason changed (``None`` otherwise).

Rules (specs/daemon.md, "Availability and pause"):

- Four causes pause a contributor, the first that holds gives the reason shown:
  1. the owner paused it (``pause``), until ``resume``;
  2. the time is outside the schedule (days, hours, time zone);
  3. another process uses a GPU (NVML's process list, this node's own processes left
     out): at the first sample that shows one;
  4. the owner is busy: other processes' share of the machine's CPU stayed at or above
     ``cpu_permille`` for ``busy_ms``.
  Causes 3 and 4 hold until ``quiet_ms`` passed without such a sample.
- While paused the node bids on nothing; what happens to a running replica is the
  driver's setting (finish it, or abort it and hand it back).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

#: What paused the node (``None``: it is not paused).
Cause = Literal["owner", "schedule", "gpu", "cpu"]

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_FULL = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class ScheduleError(ValueError):
    """A schedule's days, hours or time zone cannot be read (the message says why)."""


def _day(token: str) -> int:
    t = token.strip().lower()
    for i, full in enumerate(_FULL):
        if len(t) >= 3 and full.startswith(t):
            return i
    raise ScheduleError(f"{token.strip()!r} is not a day: use Mon, Tue, ... Sun")


def parse_days(text: str) -> frozenset[int]:
    """``"Mon-Fri"``, ``"Sat,Sun"``, ``"Fri-Mon"`` (a range may wrap the week), or ``""``
    (every day) as weekday numbers (Monday is 0)."""
    if not text.strip():
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.split(","):
        first, sep, last = part.partition("-")
        a = _day(first)
        if not sep:
            days.add(a)
            continue
        b = _day(last)
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


def _minute(text: str) -> int:
    hh, sep, mm = text.strip().partition(":")
    if not sep or not hh.isdigit() or not mm.isdigit() or len(mm) != 2:
        raise ScheduleError(f"{text.strip()!r} is not a time: use HH:MM")
    minute = int(hh) * 60 + int(mm)
    if int(mm) > 59 or minute > 24 * 60:
        raise ScheduleError(f"{text.strip()!r} is not a time of day (00:00 to 24:00)")
    return minute


def parse_hours(text: str) -> tuple[int, int]:
    """``"HH:MM-HH:MM"`` as minutes of the day ``(start, end)``; an end at or before the
    start ends the next day; ``""`` is all day ``(0, 1440)``."""
    if not text.strip():
        return (0, 24 * 60)
    first, sep, last = text.partition("-")
    if not sep:
        raise ScheduleError(f"{text.strip()!r} is not a range of hours: use HH:MM-HH:MM")
    start, end = _minute(first), _minute(last)
    if start == end or start == 24 * 60:
        raise ScheduleError(f"{text.strip()!r} is an empty range of hours")
    return start, end


@dataclass(frozen=True)
class Schedule:
    """When the node may work: ``days`` (weekday numbers), the minutes ``start`` to
    ``end`` of each of those days in ``zone`` (a window past midnight belongs to the day
    it starts on), and ``text``, the schedule as people read it."""

    days: frozenset[int]
    start: int
    end: int
    zone: dt.tzinfo
    text: str

    @classmethod
    def parse(cls, days: str, hours: str, zone: dt.tzinfo, zone_name: str) -> Schedule:
        d = parse_days(days)
        start, end = parse_hours(hours)
        text = " ".join(
            (days.strip() or "every day", hours.strip() or "all day", zone_name or "local time")
        )
        return cls(d, start, end, zone, text)

    @property
    def always(self) -> bool:
        return len(self.days) == 7 and (self.start, self.end) == (0, 24 * 60)

    def allows(self, now_ms: int) -> bool:
        """Whether ``now_ms`` (Unix milliseconds) falls inside the schedule."""
        local = dt.datetime.fromtimestamp(now_ms / 1000, self.zone)
        minute = local.hour * 60 + local.minute
        day = local.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= minute < self.end
        return (day in self.days and minute >= self.start) or (
            (day - 1) % 7 in self.days and minute < self.end
        )


@dataclass(frozen=True)
class Settings:
    """What the machine decides with (from ``contributor.availability`` and
    ``contributor.pause_on_use``)."""

    schedule: Schedule | None = None
    #: Pause while another process uses a GPU.
    gpu: bool = True
    #: Pause when other processes use at least this share of the CPU (per mille; 0: never)
    #: for ``busy_ms``.
    cpu_permille: int = 0
    busy_ms: int = 10_000
    #: Resume this long after the last GPU or CPU sample that showed use.
    quiet_ms: int = 60_000


@dataclass(frozen=True)
class Verdict:
    """Whether the node is paused, why (``reason``, as people read it) and since when."""

    paused: bool
    reason: str | None
    cause: Cause | None
    since_ms: int


class Availability:
    """The availability machine (see the module's rules)."""

    def __init__(self, settings: Settings, now_ms: int, *, owner_reason: str | None = None) -> None:
        """``owner_reason``: the node starts paused by its owner (kept over a restart)."""
        self.settings = settings
        #: The owner's pause: its reason ("" when none was given), ``None`` when not paused.
        self.owner: str | None = owner_reason
        self._gpu_users: tuple[str, ...] = ()
        self._gpu_last_ms: int | None = None
        self._cpu_over_since: int | None = None
        self._cpu_last_ms: int | None = None
        self._cpu_busy = False
        self.verdict = Verdict(False, None, None, now_ms)
        self._decide(now_ms)

    # --- inputs ----------------------------------------------------------------------

    def pause(self, reason: str, now_ms: int) -> Verdict | None:
        """The owner pauses the node (``reason`` may be empty)."""
        self.owner = reason.strip()[:200]
        return self._decide(now_ms)

    def resume(self, now_ms: int) -> Verdict | None:
        """The owner lifts their pause (the other causes still hold)."""
        self.owner = None
        return self._decide(now_ms)

    def gpu_sample(self, others: Sequence[str], now_ms: int) -> Verdict | None:
        """The processes other than this node's that use a GPU now (each as people read
        it: ``"1234 game"``)."""
        self._gpu_users = tuple(others)
        if others:
            self._gpu_last_ms = now_ms
        return self._decide(now_ms)

    def cpu_sample(self, share_permille: int, now_ms: int) -> Verdict | None:
        """Other processes' share of the machine's CPU since the last sample, per mille."""
        s = self.settings
        self._cpu_busy = False
        if s.cpu_permille and share_permille >= s.cpu_permille:
            if self._cpu_over_since is None:
                self._cpu_over_since = now_ms
            if self._cpu_last_ms is not None or now_ms - self._cpu_over_since >= s.busy_ms:
                self._cpu_last_ms = now_ms  # busy: tripped, or kept tripped
                self._cpu_busy = True
        else:
            self._cpu_over_since = None
        return self._decide(now_ms)

    def tick(self, now_ms: int) -> Verdict | None:
        """Time passed (the schedule, the quiet periods)."""
        return self._decide(now_ms)

    def configure(self, settings: Settings, now_ms: int) -> Verdict | None:
        """New settings (the owner edited the configuration)."""
        self.settings = settings
        return self._decide(now_ms)

    # --- the decision ----------------------------------------------------------------

    def _cause(self, now_ms: int) -> tuple[Cause, str] | None:
        s = self.settings
        if self.owner is not None:
            return "owner", "paused by the owner" + (f": {self.owner}" if self.owner else "")
        if s.schedule is not None and not s.schedule.allows(now_ms):
            return "schedule", f"outside the schedule ({s.schedule.text})"
        quiet_s = s.quiet_ms // 1000
        if s.gpu and self._gpu_last_ms is not None:
            if self._gpu_users:
                users = ", ".join(self._gpu_users[:3])
                more = f" and {len(self._gpu_users) - 3} more" if len(self._gpu_users) > 3 else ""
                return "gpu", f"another process uses the GPU ({users}{more})"
            if now_ms - self._gpu_last_ms < s.quiet_ms:
                return "gpu", f"another process used the GPU; resuming after {quiet_s} s quiet"
            self._gpu_last_ms = None
        if s.cpu_permille and self._cpu_last_ms is not None:
            share = f"{s.cpu_permille / 10:g}%"
            if self._cpu_busy:
                return "cpu", (
                    f"the owner is busy: other processes used over {share} of the CPU for "
                    f"{s.busy_ms / 1000:g} s"
                )
            if now_ms - self._cpu_last_ms < s.quiet_ms:
                return "cpu", (
                    f"the owner was busy (other processes used over {share} of the CPU); "
                    f"resuming after {quiet_s} s quiet"
                )
            self._cpu_last_ms = None
        return None

    def _decide(self, now_ms: int) -> Verdict | None:
        found = self._cause(now_ms)
        old = self.verdict
        cause, reason = found if found is not None else (None, None)
        if (old.cause, old.reason) == (cause, reason):
            return None
        since = old.since_ms if old.paused == (found is not None) else now_ms
        self.verdict = Verdict(found is not None, reason, cause, since)
        return self.verdict
