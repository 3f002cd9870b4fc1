"""The ledger store on a thread of its own, for the trio daemon.

A :class:`~ledger.LedgerStore` belongs to the thread that opened it (sqlite3's rule) and
its calls block on the disk; the daemon cannot use ``aiosqlite`` (it needs asyncio), so
one dedicated thread owns the store and trio code awaits calls on it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from ledger import LedgerStore, State

T = TypeVar("T")


class StoreThread:
    """A :class:`LedgerStore` on its own thread, for trio code (aiosqlite needs asyncio).

    ``await st.call(fn)`` runs ``fn(store)`` on the store's thread and returns its result.
    """

    def __init__(self, opener: Callable[[], LedgerStore]) -> None:
        self._queue: queue.SimpleQueue[Callable[[LedgerStore], None] | None] = queue.SimpleQueue()
        self._opened = threading.Event()
        self._error: BaseException | None = None
        self._store: LedgerStore | None = None
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

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
