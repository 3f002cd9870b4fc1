"""bench/soak.py's figures: the slope per 1,000 jobs with the rate of work held."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "soak.py"
    spec = importlib.util.spec_from_file_location("bench_soak", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _samples(rate_of: Any, n: int = 60, step_s: float = 15.0) -> list[dict[str, Any]]:
    out, jobs = [], 0.0
    for i in range(n):
        t = i * step_s
        if i:
            jobs += rate_of(t) * step_s
        out.append({"t": t, "jobs": jobs})
    return out


def test_a_live_set_that_follows_the_rate_is_not_growth(soak: ModuleType) -> None:
    # A daemon holding 40 KB per job/s of rate (jobs in flight, escrows in retention) and
    # nothing per job, while the rate climbs from 5 to 25 jobs/s.
    samples = _samples(lambda t: 5 + 20 * t / 900)
    rates = soak.rates(samples)
    rss = [150_000 + 40 * r for r in rates]
    plain = soak.slope([(s["jobs"], y) for s, y in zip(samples, rss, strict=True)]) * 1000
    held = soak.slope_at_steady_rate(
        [(s["jobs"], r, y) for s, r, y in zip(samples, rates, rss, strict=True)]
    )
    assert plain > 50  # reads as growth over the target
    assert abs(held * 1000) < 1


def test_growth_per_job_is_kept_when_the_rate_is_held(soak: ModuleType) -> None:
    samples = _samples(lambda t: 10 + 8 * ((t // 120) % 2))  # the rate steps up and down
    rates = soak.rates(samples)
    rss = [150_000 + 0.2 * s["jobs"] + 40 * r for s, r in zip(samples, rates, strict=True)]
    held = soak.slope_at_steady_rate(
        [(s["jobs"], r, y) for s, r, y in zip(samples, rates, rss, strict=True)]
    )
    assert held * 1000 == pytest.approx(200, rel=1e-6)


def test_the_rate_is_taken_over_the_minute_before(soak: ModuleType) -> None:
    samples = [{"t": 15.0 * i, "jobs": 0 if i < 4 else 600 * (i - 3)} for i in range(10)]
    rates = soak.rates(samples)
    assert rates[0] == 0
    assert rates[3] == 0
    assert rates[4] == pytest.approx(600 / 60)
    assert rates[9] == pytest.approx(40)  # 2,400 jobs over the last 60 s


def test_too_few_points_or_a_rate_that_moves_with_the_jobs_give_no_slope(
    soak: ModuleType,
) -> None:
    assert soak.slope_at_steady_rate([(0, 1, 5), (1, 1, 6)]) == 0
    assert soak.slope_at_steady_rate([(x, 2 * x, x) for x in range(10)]) == 0
