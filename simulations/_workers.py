"""Sandbox workers of the simulated providers, for runs of a measured duration
(``jobs.run_ms``): what a run waits for before the model runs.

As a contributor's sandbox keeps them (node/daemon/_run.py, sandbox.SandboxConfig): idle
warm workers per (owner, model), at most ``pool`` of them, reused at no start-up; one
spare worker, made ready in advance, that a run with no warm worker takes
(``startup_ms``: loading the model into it) and that is made again ``worker_start_ms``
later; past that, a run starts a worker of its own (``worker_start_ms``).
"""

from __future__ import annotations

from collections.abc import Hashable


class WorkerPools:
    def __init__(self, startup_ms: float, worker_start_ms: float) -> None:
        self.startup_ms = startup_ms
        self.worker_start_ms = worker_start_ms
        #: provider -> (owner, model) -> idle warm workers
        self._idle: dict[int, dict[Hashable, int]] = {}
        #: provider -> when its spare worker is ready (absent: ready now)
        self._spare_at: dict[int, int] = {}
        self.cold_runs = 0

    def acquire(self, provider: int, key: Hashable, now_ms: int) -> float:
        """A run starts on ``provider``: the start-up it waits, in ms."""
        idle = self._idle.setdefault(provider, {})
        if idle.get(key, 0) > 0:
            idle[key] -= 1
            return 0.0
        self.cold_runs += 1
        if self._spare_at.get(provider, 0) <= now_ms:
            self._spare_at[provider] = now_ms + int(self.worker_start_ms)
            return self.startup_ms
        return self.worker_start_ms

    def release(self, provider: int, key: Hashable, pool: int) -> None:
        """A run ended well: its worker stays warm (up to ``pool`` idle ones per key)."""
        idle = self._idle.setdefault(provider, {})
        idle[key] = min(pool, idle.get(key, 0) + 1)

    def clear(self, provider: int) -> None:
        """The provider's process stopped: its workers are gone (a new one starts with
        its spare ready)."""
        self._idle.pop(provider, None)
        self._spare_at.pop(provider, None)
