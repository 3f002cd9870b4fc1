"""The world the nodes live in: regions, per-pair latency, NAT relays, loss, partitions,
link bandwidth and churn draws. Pure functions of the scenario and the run's generators."""

from __future__ import annotations

import math
import random

from ._scenario import Churn, Network

_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class Net:
    """Latency and reachability between nodes (ids are small integers)."""

    def __init__(self, cfg: Network, seed: int, regions: bytearray, nat: bytearray) -> None:
        self.cfg = cfg
        self._salt = _mix(seed)
        self.regions = regions
        self.nat = nat
        self._base = [[float(x) for x in row] for row in cfg.latency_ms]
        self._jitter = cfg.jitter
        self._relay = cfg.relay_ms
        self._names = {name: i for i, name in enumerate(cfg.regions)}
        self._cuts = [
            (int(p.start_s * 1000), int(p.end_s * 1000), {self._names[r] for r in p.regions})
            for p in cfg.partitions
        ]

    def latency_ms(self, a: int, b: int) -> int:
        """One-way latency from ``a`` to ``b``: the region matrix, a per-pair draw (the same
        both ways, every time) and a relay hop for each end behind NAT."""
        lo, hi = (a, b) if a < b else (b, a)
        u = _mix(self._salt ^ (lo * 1_000_003 + hi)) / 2.0**64
        base = self._base[self.regions[a]][self.regions[b]]
        ms = base * (1.0 + self._jitter * u)
        if self.nat[a]:
            ms += self._relay
        if self.nat[b]:
            ms += self._relay
        return max(1, int(ms))

    def cut(self, a: int, b: int, now_ms: int) -> bool:
        """Whether a partition separates ``a`` and ``b`` at ``now_ms``."""
        for start, end, regions in self._cuts:
            if start <= now_ms < end and (self.regions[a] in regions) != (
                self.regions[b] in regions
            ):
                return True
        return False


def transfer_ms(size_bytes: int, mbps: float) -> int:
    """Time to move ``size_bytes`` over a link of ``mbps`` Mbit/s."""
    return int(size_bytes * 8 / (mbps * 1000.0))


class ChurnModel:
    """Session and offline-gap lengths for providers."""

    def __init__(self, cfg: Churn, rng: random.Random) -> None:
        self.cfg = cfg
        self.rng = rng

    def session_ms(self) -> int:
        c = self.cfg
        if c.session == "pareto":
            # Pareto with shape a and mean m: scale x_m = m (a - 1) / a.
            xm = c.session_mean_s * (c.shape - 1.0) / c.shape
            s = xm * self.rng.paretovariate(c.shape)
        else:
            sigma = c.shape
            mu = math.log(c.session_mean_s) - sigma * sigma / 2.0
            s = self.rng.lognormvariate(mu, sigma)
        return max(1_000, int(s * 1000))

    def offline_ms(self, now_ms: int) -> int:
        c = self.cfg
        gap = self.rng.expovariate(1.0 / c.offline_mean_s)
        if c.diurnal_amplitude:
            # The day's low point at 04:00 of virtual time: gaps are longest then.
            phase = 2.0 * math.pi * ((now_ms / 3_600_000.0 - 4.0) / 24.0)
            gap *= 1.0 + c.diurnal_amplitude * math.cos(phase)
        return max(1_000, int(gap * 1000))
