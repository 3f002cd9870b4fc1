"""Sending this node's transactions to a coordinator: each source tried in turn, and a
wait (bounded by what the transaction is worth waiting for) while none is reachable.

Peers' bytes enter here as the answers to ``/aimx/ledger/tx/1`` (:meth:`Submitter.submit`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

import ledger
import protocol

from ..net import NetworkError, PeerUnreachable, RemoteError
from ._errors import LedgerServiceError
from ._wire import REJECTED_PREFIX, TX_PROTOCOL

if TYPE_CHECKING:
    from ._service import LedgerService

log = logging.getLogger(__name__)

#: While no coordinator is reachable, a submission is tried again at least this often
#: (and at once when one connects), and waits at most this long in all.
SUBMIT_RETRY_S = 1.0
SUBMIT_WAIT_MAX_S = 600.0


class Submitter:
    """A node's transactions on their way to a coordinator (or into its own mempool, on
    a coordinator); waiting submissions are woken when a source connects."""

    def __init__(self, service: LedgerService) -> None:
        self._service = service
        #: Set (and replaced) when a source connects: waiting submissions try again.
        self._source_connected = trio.Event()

    async def submit(self, raw: bytes, *, wait: bool = True) -> bytes:
        """Submit a signed transaction; returns its id once the coordinator accepted it.

        While no coordinator can be reached (no connection could be made, so nothing was
        sent: one restarting, which the network redials), the submission waits for one
        (``wait``), woken when one connects and tried again at least every
        ``SUBMIT_RETRY_S``, as long as :meth:`_wait_bound_s` allows (a lock: about its
        job's deadline).

        Raises :class:`ledger.TransactionRejected` with the reason, or
        :class:`LedgerServiceError` if there is no coordinator to send it to (after the
        wait). A transaction is checked (:func:`ledger.verify_tx`) before it is sent: a
        malformed one raises :class:`ledger.MalformedTransaction` here and goes nowhere, so
        a coordinator that counts a malformed transaction against the peer that sent it
        never blames this node for forwarding another's.
        """
        if self._service.producer is not None:
            return self._service.producer.submit(raw).id
        vtx = ledger.verify_tx(raw, self._service.genesis.chain_id)
        started: float | None = None
        until: float | None = None
        while True:
            connected = self._source_connected
            tx_id = await self._submit_once(raw)
            if tx_id is not None:
                return tx_id
            now = trio.current_time()
            if until is None or started is None:
                started, until = now, now + (self._wait_bound_s(vtx) if wait else 0.0)
                if wait:
                    log.info(
                        "no coordinator reachable: a transaction waits up to %.0f s", until - now
                    )
            if now >= until:
                waited = f" (waited {now - started:.0f} s)" if wait else ""
                raise LedgerServiceError(
                    f"no coordinator reachable to submit the transaction to{waited}"
                )
            with trio.move_on_at(min(until, now + SUBMIT_RETRY_S)):
                await connected.wait()

    async def watch_sources(self, events: Any) -> None:
        """Wake the submissions waiting for a coordinator when a source connects."""
        service = self._service
        async with events:
            async for event in events:
                if event.connected and event.peer in service.replica.sources:
                    self._source_connected.set()
                    self._source_connected = trio.Event()
                    for callback in service.on_source_connected:
                        callback()

    async def _submit_once(self, raw: bytes) -> bytes | None:
        """Try each source once: the tx id; None if none could be reached (nothing was
        answered: safe to send again). A source that took it and did not answer in time
        (it may yet apply it) or answered nonsense ends the submission as before.

        Only the source's own refusal (an error answer saying ``transaction rejected``) is
        a refusal. Any other error answer (a reply cut short, a handler that failed, a
        forwarding replica with no coordinator) says nothing about whether the transaction
        was admitted: its outcome is unknown, and the caller resolves it from the chain."""
        service = self._service
        unreachable = bool(service.replica.sources)
        for peer in service.replica.sources:
            try:
                response = await service.net.request(peer, TX_PROTOCOL, raw)
            except RemoteError as exc:
                if str(exc).startswith(REJECTED_PREFIX):
                    raise ledger.TransactionRejected(str(exc)) from None
                log.info("transaction answer from %s unusable: %s", protocol.peer_id(peer), exc)
                unreachable = False
                continue
            except PeerUnreachable:
                continue
            except NetworkError:
                unreachable = False
                continue
            try:
                value = protocol.unpack(response)
                if type(value) is not list or len(value) != 1 or type(value[0]) is not bytes:
                    raise protocol.RemoteProtocolError("expected [tx_id]")
            except protocol.ProtocolError as exc:
                service.misbehaved(peer, f"bad answer to a transaction: {exc}")
                unreachable = False
                continue
            return bytes(value[0])
        if not unreachable:
            raise LedgerServiceError("no coordinator reachable to submit the transaction to")
        return None

    def _wait_bound_s(self, vtx: ledger.VerifiedTx) -> float:
        """How long ``vtx`` may wait for a coordinator: a lock until its escrow's claim
        height would come had blocks kept coming (its job's deadline and a few blocks: the
        job has failed by then), anything else ``SUBMIT_WAIT_MAX_S`` (a settle, refund or
        claim is worth the wait, and the chain does not move while its coordinator is
        away)."""
        service = self._service
        payload = vtx.payload
        if not isinstance(payload, ledger.Lock):
            return SUBMIT_WAIT_MAX_S
        blocks = max(0, payload.claim_height - service.state.height)
        return min(SUBMIT_WAIT_MAX_S, blocks * service.interval_ms / 1000)
