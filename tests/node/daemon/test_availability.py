"""The availability machine alone: the owner's pause, the schedule (given times, real time
zones), pause on GPU use and on the owner's CPU use, quiet periods (no clock, no I/O)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from node.daemon.availability import (
    Availability,
    Schedule,
    ScheduleError,
    Settings,
    parse_days,
    parse_hours,
)

BERLIN = ZoneInfo("Europe/Berlin")


def ms(
    year: int, month: int, day: int, hour: int, minute: int = 0, zone: dt.tzinfo = BERLIN
) -> int:
    return int(dt.datetime(year, month, day, hour, minute, tzinfo=zone).timestamp() * 1000)


def evenings() -> Schedule:
    return Schedule.parse("Mon-Fri", "18:00-08:00", BERLIN, "Europe/Berlin")


def test_days_and_hours_are_read() -> None:
    assert parse_days("Mon-Fri") == frozenset(range(5))
    assert parse_days("sat, Sunday") == frozenset({5, 6})
    assert parse_days("Fri-Mon") == frozenset({4, 5, 6, 0})  # wraps the week
    assert parse_days("") == frozenset(range(7))
    assert parse_hours("18:00-08:00") == (18 * 60, 8 * 60)
    assert parse_hours("00:00-24:00") == (0, 1440)
    assert parse_hours("") == (0, 1440)
    for bad in ("Mo", "Funday", "Mon-"):
        with pytest.raises(ScheduleError):
            parse_days(bad)
    for bad in ("18:00", "25:00-01:00", "8-9", "09:00-09:00", "10:60-11:00"):
        with pytest.raises(ScheduleError):
            parse_hours(bad)


def test_a_night_window_belongs_to_the_day_it_starts() -> None:
    s = evenings()
    # 2026-12-04 is a Friday, 2026-12-05 a Saturday, 2026-12-07 a Monday
    assert s.allows(ms(2026, 12, 4, 18, 0))
    assert s.allows(ms(2026, 12, 5, 7, 59))  # Friday night runs into Saturday morning
    assert not s.allows(ms(2026, 12, 5, 8, 0))
    assert not s.allows(ms(2026, 12, 5, 20, 0))  # Saturday evening: not a working day
    assert not s.allows(ms(2026, 12, 7, 7, 0))  # Monday morning: Sunday had no window
    assert not s.allows(ms(2026, 12, 7, 17, 59))
    assert s.allows(ms(2026, 12, 7, 18, 0))


def test_the_schedule_is_read_in_its_time_zone() -> None:
    s = evenings()
    # 17:30 UTC on a Monday in winter is 18:30 in Berlin: inside
    assert s.allows(ms(2026, 12, 7, 17, 30, zone=dt.UTC))
    # in summer Berlin is UTC+2: 16:30 UTC is 18:30 there
    assert s.allows(ms(2026, 7, 6, 16, 30, zone=dt.UTC))
    assert not s.allows(ms(2026, 7, 6, 15, 30, zone=dt.UTC))


def test_outside_the_schedule_the_reason_names_it_and_it_resumes_inside() -> None:
    a = Availability(Settings(schedule=evenings()), ms(2026, 12, 7, 12, 0))
    assert a.verdict.paused and a.verdict.cause == "schedule"
    assert a.verdict.reason == "outside the schedule (Mon-Fri 18:00-08:00 Europe/Berlin)"
    assert a.tick(ms(2026, 12, 7, 17, 0)) is None  # no change
    opened = a.tick(ms(2026, 12, 7, 18, 0))
    assert opened is not None and not opened.paused and opened.reason is None
    assert opened.since_ms == ms(2026, 12, 7, 18, 0)


def test_the_owner_pause_comes_first_and_resume_leaves_the_others() -> None:
    a = Availability(Settings(schedule=evenings()), ms(2026, 12, 7, 19, 0))
    assert not a.verdict.paused
    v = a.pause("playing", ms(2026, 12, 7, 19, 5))
    assert v is not None and v.paused and v.reason == "paused by the owner: playing"
    assert v.since_ms == ms(2026, 12, 7, 19, 5)
    # the schedule closing meanwhile does not change what is shown
    assert a.tick(ms(2026, 12, 8, 9, 0)) is None
    v = a.resume(ms(2026, 12, 8, 9, 0))
    assert v is not None and v.paused and v.cause == "schedule"
    assert v.since_ms == ms(2026, 12, 7, 19, 5)  # paused all along
    assert Availability(Settings(), 0, owner_reason="").verdict.reason == "paused by the owner"


def test_another_process_on_the_gpu_pauses_until_a_quiet_period() -> None:
    a = Availability(Settings(gpu=True, quiet_ms=60_000), 0)
    assert a.gpu_sample([], 1_000) is None
    v = a.gpu_sample(["4242 game"], 2_000)
    assert v is not None and v.paused and v.cause == "gpu"
    assert v.reason == "another process uses the GPU (4242 game)"
    v = a.gpu_sample([], 3_000)
    assert v is not None and v.paused and "resuming after 60 s quiet" in (v.reason or "")
    assert a.tick(61_999) is None
    v = a.tick(62_000)
    assert v is not None and not v.paused
    # with the setting off, nothing happens
    off = Availability(Settings(gpu=False), 0)
    assert off.gpu_sample(["4242 game"], 1) is None and not off.verdict.paused


def test_the_owner_busy_on_the_cpu_pauses_after_busy_ms_and_resumes_after_quiet() -> None:
    a = Availability(Settings(cpu_permille=500, busy_ms=10_000, quiet_ms=30_000), 0)
    assert a.cpu_sample(800, 0) is None
    assert a.cpu_sample(800, 9_999) is None  # not long enough yet
    v = a.cpu_sample(700, 10_000)
    assert v is not None and v.paused and v.cause == "cpu"
    assert v.reason == "the owner is busy: other processes used over 50% of the CPU for 10 s"
    # a dip below the share starts the quiet period; use again restarts it
    v = a.cpu_sample(100, 12_000)
    assert v is not None and "resuming after 30 s quiet" in (v.reason or "")
    assert a.cpu_sample(900, 20_000) is not None  # busy again at once (no new busy_ms)
    assert a.cpu_sample(100, 22_000) is not None
    assert a.tick(49_999) is None
    v = a.tick(50_000)
    assert v is not None and not v.paused
    # a short burst never pauses
    b = Availability(Settings(cpu_permille=500, busy_ms=10_000), 0)
    for t in range(0, 60_000, 2_000):
        assert b.cpu_sample(900 if t % 8_000 else 100, t) is None
    assert not b.verdict.paused


def test_new_settings_take_effect_at_once() -> None:
    a = Availability(Settings(), ms(2026, 12, 7, 12, 0))
    assert not a.verdict.paused
    v = a.configure(Settings(schedule=evenings()), ms(2026, 12, 7, 12, 1))
    assert v is not None and v.cause == "schedule"
    v = a.configure(Settings(), ms(2026, 12, 7, 12, 2))
    assert v is not None and not v.paused
