"""The sandbox's workers (:class:`WorkerPool`): warm workers kept for an owner's next job,
the least recently used evicted to make room; spares started ahead of need so that a cold
job need not wait for a worker to start; and the spawner threads that start every worker.

Workers are started from these long-lived threads only: a parent-death signal (the
worker's and bubblewrap's) fires when the *thread* that forked it exits, and callers'
threads (trio.to_thread's, say) come and go."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ._cancel import RunCancel
from ._config import SandboxConfig
from ._errors import RunCancelled, SandboxConfigError
from ._launch import SpareKey, StartFailed
from ._worker_handle import WorkerHandle

#: A warm worker's key: the owner and everything about the job that the worker keeps.
WarmKey = tuple[object, ...]
#: How often a run that can be cancelled looks at its handle while it waits for a slot.
CANCEL_POLL_S = 0.1


class WorkerPool:
    """At most ``config.pool_size`` workers running jobs or idle and warm, plus up to
    ``config.spare_workers`` spares; ``start`` starts one worker (on a spawner thread)."""

    def __init__(self, config: SandboxConfig, start: Callable[[SpareKey], WorkerHandle]) -> None:
        self.config = config
        self._start = start
        self._cond = threading.Condition()
        self._running = 0
        #: Idle warm workers, least recently used first; several may share a key (one
        #: owner's jobs run concurrently), the pool size bounds them all.
        self.idle: list[tuple[WarmKey, WorkerHandle]] = []
        self._spares: dict[SpareKey, WorkerHandle] = {}  # never ran a job; insertion order = LRU
        self._starting: dict[SpareKey, int] = {}  # spares being started, by key
        self._spawner = ThreadPoolExecutor(
            max_workers=config.pool_size + max(0, config.spare_workers),
            thread_name_prefix="aimx-sandbox-spawn",
        )
        self._closed = False

    def destroy(self, worker: WorkerHandle) -> None:
        worker.destroy(self.config.subreaper)

    # --- warm workers ------------------------------------------------------------------

    def acquire(self, key: WarmKey | None, cancel: RunCancel | None = None) -> WorkerHandle | None:
        """A warm worker for ``key`` (taken out of the idle set), or None; reserves a slot.
        Waiting for one, a ``cancel`` ends the wait (:class:`RunCancelled`, no slot)."""
        evict: list[WorkerHandle] = []
        with self._cond:
            if self._closed:
                raise SandboxConfigError("the sandbox is closed")
            warm = self._take_idle(key)
            while warm is None and self._running + len(self.idle) >= self.config.pool_size:
                if self.idle:
                    evict.append(self.idle.pop(0)[1])  # the least recently used
                    continue
                if cancel is not None and cancel.cancelled:
                    raise RunCancelled("the run was cancelled while it waited for a worker")
                self._cond.wait(CANCEL_POLL_S if cancel is not None else None)
                warm = self._take_idle(key)
            self._running += 1
        for w in evict:
            self.destroy(w)
        return warm

    def _take_idle(self, key: WarmKey | None) -> WorkerHandle | None:
        """The most recently used idle worker for ``key``, taken out of the idle list."""
        if key is None:
            return None
        for i in range(len(self.idle) - 1, -1, -1):
            if self.idle[i][0] == key:
                return self.idle.pop(i)[1]
        return None

    def release(self, worker: WorkerHandle | None, key: WarmKey | None) -> None:
        """Give back the slot :meth:`acquire` reserved; ``worker`` (with a ``key``) stays
        warm, and without a key is destroyed."""
        destroy: list[WorkerHandle] = []
        with self._cond:
            self._running -= 1
            if worker is not None and key is not None and not self._closed:
                self.idle.append((key, worker))
            elif worker is not None:
                destroy.append(worker)
            self._cond.notify()
        for w in destroy:
            self.destroy(w)

    def spawn(self, skey: SpareKey) -> WorkerHandle:
        """Start a worker (from a spawner thread) and wait until it is ready."""
        return self._spawner.submit(self._start, skey).result()

    # --- spares ------------------------------------------------------------------------

    def take_spare(self, skey: SpareKey) -> WorkerHandle | None:
        """A spare started for ``skey`` (waiting for one being started), or None."""
        if self.config.spare_workers < 1:
            return None
        with self._cond:
            end = time.monotonic() + self.config.startup_timeout_s + 5
            while self._starting.get(skey) and skey not in self._spares:
                if time.monotonic() > end:
                    break
                self._cond.wait(0.5)
            spare = self._spares.pop(skey, None)
        if spare is not None and spare.popen.poll() is not None:
            self.destroy(spare)  # died while waiting: start afresh
            return None
        return spare

    def replenish(self, skey: SpareKey) -> None:
        """Start a spare for ``skey`` in the background unless there is one already."""
        if self.config.spare_workers < 1:
            return
        with self._cond:
            if self._closed or skey in self._spares or self._starting.get(skey):
                return
            if sum(self._starting.values()) >= self.config.spare_workers:
                return  # as many being started as may be kept: none waits behind them
            self._starting[skey] = 1
        self._spawner.submit(self._start_spare, skey)

    def prepare(self, skey: SpareKey) -> bool:
        """Have a spare for ``skey`` (start one and wait for it if there is none); whether
        there is one now."""
        with self._cond:
            if self._closed:
                raise SandboxConfigError("the sandbox is closed")
            start = skey not in self._spares and not self._starting.get(skey)
            if start:
                self._starting[skey] = 1
        if start:
            self._spawner.submit(self._start_spare, skey).result()
        with self._cond:
            end = time.monotonic() + self.config.startup_timeout_s + 5
            while self._starting.get(skey) and time.monotonic() < end:
                self._cond.wait(0.5)
            return skey in self._spares

    def _start_spare(self, skey: SpareKey) -> None:
        """Start a spare (``self._starting[skey]`` already counts it) and keep it."""
        worker: WorkerHandle | None = None
        evict: list[WorkerHandle] = []
        try:
            worker = self._start(skey)
        except StartFailed:
            worker = None
        finally:
            with self._cond:
                self._starting.pop(skey, None)
                if worker is not None:
                    if self._closed or skey in self._spares:
                        evict.append(worker)
                    else:
                        self._spares[skey] = worker
                        while len(self._spares) > self.config.spare_workers:
                            evict.append(self._spares.pop(next(iter(self._spares))))
                self._cond.notify_all()
            for w in evict:
                self.destroy(w)

    def close(self) -> None:
        """Refuse new jobs, wait (bounded) for spares being started, stop every idle worker
        and spare, and stop the spawner threads."""
        with self._cond:
            self._closed = True
            end = time.monotonic() + self.config.startup_timeout_s + 5
            while self._starting and time.monotonic() < end:  # bounded by the start timeout
                self._cond.wait(0.5)
            idle = [*(w for _, w in self.idle), *self._spares.values()]
            self.idle.clear()
            self._spares.clear()
        for w in idle:
            self.destroy(w)
        self._spawner.shutdown(wait=True)
