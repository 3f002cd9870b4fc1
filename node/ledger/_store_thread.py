"""The ledger store on a thread of its own, for the trio daemon.

A :class:`~ledger.LedgerStore` belongs to the thread that opened it (sqlite3's rule) and
its calls block on the disk; the daemon cannot use ``aiosqlite`` (it needs asyncio), so
one dedicated thread owns the store and trio code awaits calls on it.

A block that cannot be written (disk full, I/O error) is no reason to stop the daemon:
:meth:`StoreThread.commit` reports it as the store's :attr:`~StoreThread.fault` (logged
once, with its cause), the store stays at its last good height, and the next commit that
succeeds clears the fault (the ledger service retries: specs/daemon.md, "Disk full").
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from ledger import Block, LedgerStore, State, StoreError
from protocol import Signed

T = TypeVar("T")
log = logging.getLogger(__name__)


class StoreThread:
    """A :class:`LedgerStore` on its own thread, for trio code (aiosqlite needs asyncio).

    ``await st.call(fn)`` runs ``fn(store)`` on the store's thread and returns its result.
    """

    def __init__(self, opener: Callable[[], LedgerStore]) -> None:
        self._queue: queue.SimpleQueue[Callable[[LedgerStore], None] | None] = queue.SimpleQueue()
        self._opened = threading.Event()
        self._error: BaseException | None = None
        self._store: LedgerStore | None = None
        #: Why the last block write failed (``None`` once one succeeds again).
        self.fault: str | None = None
        #: Called with the new :attr:`fault` each time it changes (on the trio thread).
        self.on_fault: list[Callable[[str | None], None]] = []
        self._thread = threading.Thread(
            target=self._run, args=(opener,), name="ledger-store", daemon=True
        )
        self._thread.start()
        self._opened.wait()
        if self._error is not None:
            raise self._error

    def _run(self, opener: Callable[[], LedgerStore]) -> None:
        try:
            self._store = opener()
        except BaseException as exc:
            self._error = exc
            self._opened.set()
            return
        self._opened.set()
        store = self._store
        while True:
            job = self._queue.get()
            if job is None:
                store.close()
                return
            job(store)

    @property
    def state(self) -> State:
        assert self._store is not None
        return self._store.state

    async def call(self, fn: Callable[[LedgerStore], T]) -> T:
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        box: list[Any] = []

        def job(store: LedgerStore) -> None:
            try:
                box.append((True, fn(store)))
            except BaseException as exc:
                box.append((False, exc))
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        self._queue.put(job)
        with trio.CancelScope(shield=True):
            await done.wait()
        ok, value = box[0]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    async def commit(self, block: Signed[Block], state: State) -> bool:
        """Write ``block`` and the state after it; ``False`` if the write failed (the
        store keeps its last good height, and :attr:`fault` says why)."""
        try:
            await self.call(lambda s: s.commit(block, state))
        except StoreError as exc:
            self._set_fault(str(exc))
            return False
        self._set_fault(None)
        return True

    def _set_fault(self, fault: str | None) -> None:
        if fault == self.fault:
            return
        if fault is None:
            log.warning(
                "the ledger is written again (at height %d); fault cleared", self.state.height
            )
        elif self.fault is None:
            log.error(
                "%s; the ledger stays at height %d, this node takes no new work, and it "
                "retries until the write succeeds",
                fault,
                self.state.height,
            )
        self.fault = fault
        for callback in self.on_fault:
            callback(fault)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
