"""Ending a run from another thread: :class:`RunCancel`.

A run is a blocking call on a thread of its own (``Sandbox.run``). The daemon that stops
waiting for it (its job was aborted: past the award's deadline, paid meanwhile, an escrow
that cannot pay) must also end it: a run left going kept its pool slot and its thread to
the wall-clock limit while the daemon counted the slot free, and a requester awarding jobs
it aborted at once filled every slot and thread with them (review round 62, F1).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._worker_handle import WorkerHandle


class RunCancel:
    """A run's cancel handle, shared by the thread that runs it and the one that ends it.

    ``cancel()`` (any thread, any time, more than once) ends the run: one waiting for a
    pool slot gives up, one holding a worker has it killed (its reply never comes, and the
    worker is destroyed), one not started yet never starts. The run returns a failed
    outcome soon after, which its caller drops."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._worker: WorkerHandle | None = None

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        # The kill is made under the lock: the run's thread detaches its worker under it
        # before reaping it, so no signal ever reaches a process id reused after the reap.
        with self._lock:
            self._event.set()
            if self._worker is not None:
                self._worker.kill()

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; whether the run was cancelled."""
        return self._event.wait(timeout)

    def attach(self, worker: WorkerHandle) -> bool:
        """The run goes on with ``worker``, which a cancel kills; False if already
        cancelled (the caller then ends the run without using it)."""
        with self._lock:
            if self._event.is_set():
                return False
            self._worker = worker
            return True

    def detach(self) -> None:
        """The run is done with its worker (before the worker is reaped or kept warm)."""
        with self._lock:
            self._worker = None
