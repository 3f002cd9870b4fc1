"""Requests and responses over libp2p streams (specs/network.md, "Request/response").

Inbound: each protocol with a handler gets a stream handler that reads request frames and
writes response frames until the stream ends, idles or misbehaves; a bad frame resets the
stream and is counted (every inbound stream is also guarded: :mod:`._libp2p_inbound`). At
most ``max_inbound_streams`` are served at once, shared fairly (:mod:`._fair_slots`).

Outbound: a request takes an idle stream to the peer for that protocol from a small pool
(one the peer has ended is dropped), or opens one; a pooled stream found ended as the
request is written is dropped and the next taken.

A stream the server ends without running the request it may carry (its slot taken between
requests, a new stream refused, an idle one closed) is answered first: ``STATUS_RETRY``,
then its half closed (so that the answer is read before the reset that follows), and the
requester sends the request again on a new stream; nothing else is sent again (a stream
ending after the request went out is :class:`AnswerLost`). Without it a request on its way when
its slot was taken saw only a reset: 2.3 % of honest requests failed with 24 peers on 16
slots, some said "malformed" (review round 20, R20-1).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

import protocol

from ._errors import (
    AnswerLost,
    MessageTooLarge,
    NetworkError,
    NetworkTimeout,
    PeerBusy,
    PeerUnreachable,
    ProtocolNotSupported,
    RemoteError,
)
from ._fair_slots import FairSlots, Slot
from ._framing import (
    STATUS_ERROR,
    STATUS_OK,
    STATUS_RETRY,
    STATUS_TOO_LARGE,
    EndOfStream,
    FrameReader,
    MalformedFrame,
    TruncatedFrame,
    request_frame,
    response_frame,
)
from ._interface import NetworkCounters, PeerKey
from ._libp2p_config import Libp2pConfig
from ._libp2p_inbound import host_of, reset, who
from ._libp2p_transport import key_of, peer_id_of
from ._libp2p_unread import CountedReader, FrameDropped, spawn
from ._limits import MAX_FRAME_BYTES, MAX_INBOUND_PER_PEER, MAX_LARGE_REQUESTS_PER_PEER
from ._serving import HandlerEntry, answer, error_for, too_large

log = logging.getLogger(__name__)

#: Idle streams kept per (peer, protocol). A requester's bursts (the awards or receipts of
#: every job whose lock landed in one block) went past 8: each request past the pool
#: opened a stream and reset it after one answer (326 of a bench's 1,236 market requests
#: at 8; 51 at 16). The server's bounds (streams per peer, fair slots) are unchanged.
_POOL_PER_KEY = 16
#: An answer is written in pieces of this size, each one progress on its slot (the
#: progress floor's size: _fair_slots.PROGRESS_BYTES).
WRITE_CHUNK = 16 << 10
#: A request slot is taken from its peer once stalled this long (_fair_slots.py), and a
#: new stream waits this long for one when every slot is held.
REQUEST_STALL_S = 1.0
REQUEST_SLOT_WAIT_S = 1.5
#: A request arriving after a pause this long has this long to arrive and be answered.
FRAME_GRACE_S = 0.25
#: ``STATUS_RETRY`` answers (the server ran none of it) one request takes before it fails.
REQUEST_TRIES = 3
#: Longest wait for a ``STATUS_RETRY`` answer and its stream's half close to go out.
RETRY_WRITE_S = 0.5
#: How often a stream waiting for its peer's or host's running handlers checks again.
RUNNING_POLL_S = 0.1
#: The pause before sending again after a refused new stream (every slot was held).
BUSY_PAUSE_S = 0.05
#: The answer to a request that was not pipelined behind the last is not taken for this
#: long while it is written (then only if stalled). Without it, a handler that took longer
#: than the stall time left its slot takeable as it answered, and honest requests that had
#: run lost their answers (24 peers on 16 slots, 0.4 s handlers: 22 of 89 slots taken
#: then, round 22, R22-2). None for pipelined requests: a key pipelining tiny requests and
#: reading their answers slowly held its slots for 65 bytes a second with it (R21-1).
ANSWER_GRACE_S = 0.25


async def end(stream: Any) -> None:
    """Half close ``stream``, then reset it: the peer still reads what was written (a
    reset alone makes py-libp2p's yamux drop a stream's unread bytes). Bounded and
    shielded, as :func:`reset`."""
    with (
        trio.CancelScope(shield=True),
        trio.move_on_after(RETRY_WRITE_S),
        contextlib.suppress(Exception),
    ):
        await stream.close()
    await reset(stream)


async def send_again(stream: Any, reason: str) -> None:
    """End ``stream`` as :func:`end` does, telling its peer first that the request it may
    have sent was not run: ``STATUS_RETRY``. The answer and the half close share one
    ``RETRY_WRITE_S``."""
    with (
        trio.CancelScope(shield=True),
        trio.move_on_after(RETRY_WRITE_S),
        contextlib.suppress(Exception),
    ):
        await stream.write(response_frame(STATUS_RETRY, reason.encode()[:256]))
        await stream.close()
    await reset(stream)


def _unread(stream: Any) -> int:
    """Bytes the peer sent on ``stream`` that py-libp2p's yamux holds and nobody read yet."""
    try:
        muxed = stream.muxed_stream
        return len(muxed.conn.stream_buffers.get(muxed.stream_id) or b"")
    except Exception:
        return 0


def _ended(stream: Any) -> bool:
    """Whether the peer ended a pooled stream (its half closed, or reset), or wrote to it
    while it was idle: a request written there could not be answered, and its status 4
    would go unread; bytes written unasked would be read as the next answer, and be kept
    meanwhile (round 49, P1)."""
    try:
        muxed = stream.muxed_stream
        if muxed.closed or muxed.recv_closed or muxed.reset_received:
            return True
    except Exception:
        return False
    return _unread(stream) > 0


class _LargeRequests:
    """Large requests (past a gated protocol's small limit: ``large_from``) being read or
    handled, by peer: at most ``MAX_LARGE_REQUESTS_PER_PEER`` each. A provider sends one
    Result with its output a replica; a key that won an award for one cheap bid could
    send 64 streams of 4 MiB (round 41, F2)."""

    def __init__(self) -> None:
        self._of: dict[PeerKey, int] = {}

    def take(self, peer: PeerKey) -> bool:
        held = self._of.get(peer, 0)
        if held >= MAX_LARGE_REQUESTS_PER_PEER:
            return False
        self._of[peer] = held + 1
        return True

    def give(self, peer: PeerKey) -> None:
        held = self._of.pop(peer, 0) - 1
        if held > 0:
            self._of[peer] = held


@dataclass(slots=True)
class _Pooled:
    stream: Any
    reader: FrameReader


class RequestStreams:
    """Serves ``handlers`` on ``host`` and sends requests to peers, reached through
    ``connect`` (which dials the peer if it is not connected)."""

    def __init__(
        self,
        host: Any,
        config: Libp2pConfig,
        counters: NetworkCounters,
        handlers: Mapping[str, HandlerEntry],
        connect: Callable[[PeerKey], Awaitable[None]],
    ) -> None:
        self._host = host
        self._config = config
        self._counters = counters
        self._handlers = handlers
        self._connect = connect
        self._pool: dict[tuple[PeerKey, str], list[_Pooled]] = {}
        self._slots = FairSlots(
            config.max_inbound_streams,
            MAX_INBOUND_PER_PEER,
            stall_s=REQUEST_STALL_S,
            wait_s=REQUEST_SLOT_WAIT_S,
        )
        self._large = _LargeRequests()
        self._nursery: trio.Nursery | None = None
        self._closed = False

    def start(self, nursery: trio.Nursery) -> None:
        """Streams left over are reset in ``nursery`` from now on."""
        self._nursery = nursery

    def close(self) -> None:
        """Pool no more streams: the network is closing."""
        self._closed = True

    def serving(self) -> set[PeerKey]:
        """The peers whose request we are reading, handling or answering now."""
        return self._slots.active_peers()

    def forget_peer(self, peer: PeerKey) -> None:
        """Drop the pooled streams to a peer whose connection closed."""
        for pk in [k for k in self._pool if k[0] == peer]:
            del self._pool[pk]

    # --- inbound -------------------------------------------------------------------------

    def serve(self, protocol_id: str) -> None:
        """Accept streams for ``protocol_id`` (its handler is looked up per request)."""

        async def stream_handler(stream: Any) -> None:
            await self._serve_stream(protocol_id, stream)

        self._host.set_stream_handler(protocol_id, stream_handler)

    def stop_serving(self, protocol_id: str) -> None:
        with contextlib.suppress(Exception):
            self._host.get_mux().remove_handler(protocol_id)

    async def _serve_stream(self, protocol_id: str, stream: Any) -> None:
        """Serve request frames on one inbound stream until it ends, idles, misbehaves or
        loses its slot to a peer holding fewer (:class:`FairSlots`). Never raises: this
        runs inside the host."""
        try:
            sender = key_of(stream.muxed_conn.peer_id)
        except Exception:
            sender = None
        slot = (
            await self._slots.acquire(sender, host_of(stream, sender))
            if sender is not None
            else None
        )
        if sender is None or slot is None:
            self._counters.requests_rejected += 1
            if sender is None:
                await reset(stream)
            else:
                await send_again(stream, "busy: every stream slot is held, none was run")
            return
        try:
            with slot.scope:
                await self._serve_frames(protocol_id, stream, sender, slot)
            if slot.evicted:
                log.debug(
                    "took the slot of a stream on %s from peer %s (a peer holding fewer "
                    "needed one)",
                    protocol_id,
                    protocol.peer_id(sender),
                )
                if slot.handled:  # our handler had its request: the answer as far as written
                    await end(stream)
                else:
                    await send_again(stream, "slot taken: the request was not run")
        except Exception as exc:
            log.debug("request stream on %s from peer %s ended: %r", protocol_id, who(stream), exc)
            await reset(stream)
        finally:
            self._slots.leave(slot)

    async def _serve_frames(
        self, protocol_id: str, stream: Any, sender: PeerKey, slot: Slot
    ) -> None:
        """Serve the stream's requests; what its reader holds of a request not complete yet
        is counted in the node's budget of unread bytes (``_libp2p_unread.py``), which may
        drop it (the stream is then reset)."""

        async def read(max_bytes: int) -> bytes:
            data: bytes = await stream.read(max_bytes)
            slot.moved(len(data))  # a transfer making progress keeps its slot
            counted.received(len(data))
            if counted.dropped:
                raise FrameDropped("the node held too many unread bytes: request dropped")
            return data

        reader = FrameReader(read)
        counted = CountedReader(stream, lambda: reader.held, lambda: spawn(reset, stream))
        try:
            await self._serve_requests(protocol_id, stream, sender, slot, reader)
        finally:
            counted.close()

    async def _serve_requests(
        self, protocol_id: str, stream: Any, sender: PeerKey, slot: Slot, reader: FrameReader
    ) -> None:
        config = self._config
        answered = False
        while True:
            slot.exchanging = False  # between requests: takeable (_fair_slots.py)
            while not self._slots.may_run(slot):  # its peer's or host's handlers at cap
                await trio.sleep(RUNNING_POLL_S)
            idle_since = trio.current_time()
            # the next request came before our answer went: read, or waiting unread. A
            # stream's first request is behind no answer, though its bytes are often
            # waiting already (always after a wait for a slot): counted as pipelined, its
            # answer had no grace, and after a long handler it was cut (round 24, F2).
            pipelined = answered and (reader.buffered > 0 or _unread(stream) > 0)
            # The idle timeout bounds the wait for a request only: cut short, a handler's
            # work was done and its requester, told nothing, sent it again (round 21,
            # R21-2). A handler is bounded by its own timeout, and answers an error then.
            with trio.move_on_after(config.stream_idle_timeout):
                try:
                    await reader.wait_data()
                except EndOfStream:
                    with contextlib.suppress(Exception):
                        await stream.close()
                    return
            if not reader.buffered:
                await send_again(stream, "idle: the stream was closed, nothing was run")
                return
            # A request is coming: kept while its bytes move. A request after a pause of
            # FRAME_GRACE_S gets that long to arrive and be answered (a small exchange
            # moves no 16 KiB: taken mid-way, its requester saw a reset: round 20, R20-1,
            # R20-3); a request pipelined behind the last gets none (tiny frames
            # pipelined, each with a grace, held every slot: R19-1), and a peer pausing to
            # earn it is takeable while it pauses.
            slot.exchanging = True
            if trio.current_time() - idle_since >= FRAME_GRACE_S:
                slot.progress(age=REQUEST_STALL_S - FRAME_GRACE_S)
            entry = self._handlers.get(protocol_id)
            large = False  # a large request of a gated protocol (large_from) read
            try:
                try:
                    with trio.fail_after(config.frame_timeout):
                        length = await reader.read_length()
                        if entry is not None:
                            limit = entry.over_limit(sender, length)
                        else:
                            limit = MAX_FRAME_BYTES if length > MAX_FRAME_BYTES else None
                        if limit is not None:
                            raise MessageTooLarge(too_large(length, limit, protocol_id))
                        if (
                            entry is not None
                            and entry.large_from is not None
                            and length > entry.small_request_bytes
                        ):
                            if not self._large.take(sender):
                                await send_again(
                                    stream,
                                    f"busy: at most {MAX_LARGE_REQUESTS_PER_PEER} large requests "
                                    "of one peer are read at once; nothing was run",
                                )
                                return
                            large = True
                        data = await reader.read_body(length)
                except MessageTooLarge as exc:
                    self._counters.requests_rejected += 1
                    log.debug(
                        "refused an oversized request on %s from peer %s: %s",
                        protocol_id,
                        protocol.peer_id(sender),
                        exc,
                    )
                    with trio.move_on_after(config.frame_timeout), contextlib.suppress(Exception):
                        await stream.write(
                            response_frame(STATUS_TOO_LARGE, str(exc).encode()[:1024])
                        )
                    await end(stream)
                    return
                except (MalformedFrame, trio.TooSlowError) as exc:
                    self._counters.requests_rejected += 1
                    log.debug(
                        "bad request frame on %s from peer %s: %s",
                        protocol_id,
                        protocol.peer_id(sender),
                        exc,
                    )
                    await reset(stream)
                    return
                while not self._slots.may_run(slot):
                    # Checked again as the handler would start: every idle stream of a key
                    # passed the check above while none of its handlers ran, and one request
                    # on each then ran 63 handlers of one key at once (round 25, G1). Its
                    # request is not run meanwhile, and its slot may be taken (status 4).
                    slot.exchanging = False
                    await trio.sleep(RUNNING_POLL_S)
                if slot.evicted:
                    # taken as the request came in: its cancellation is due at the next
                    # checkpoint, inside the handler. Not run: the caller says so.
                    return
                slot.busy = slot.handled = True  # our handler's time: never taken
                with trio.move_on_after(config.stream_idle_timeout) as handling:
                    status, body = await answer(
                        entry, sender, protocol_id, data, self._counters, log
                    )
                data = b""  # not held while the answer is written
                if handling.cancelled_caught:
                    self._counters.handler_errors += 1
                    status, body = (
                        STATUS_ERROR,
                        (
                            f"the peer's handler for {protocol_id} did not answer within "
                            f"{config.stream_idle_timeout:g} s (it may have done its work)"
                        ).encode(),
                    )
            finally:
                if large:
                    self._large.give(sender)
            slot.busy = False  # an answer served is no progress: its bytes are
            if not pipelined:
                slot.answering_until = trio.current_time() + ANSWER_GRACE_S
            frame = response_frame(status, body)
            with trio.fail_after(config.frame_timeout):
                for at in range(0, len(frame), WRITE_CHUNK):
                    chunk = frame[at : at + WRITE_CHUNK]
                    await stream.write(chunk)
                    slot.moved(len(chunk))
            slot.handled, slot.answering_until = False, float("-inf")
            answered = True

    # --- outbound ------------------------------------------------------------------------

    async def request(
        self, peer: PeerKey, protocol_id: str, data: bytes, timeout: float, max_response: int
    ) -> bytes:
        """One request frame to another peer and its response (checked by the caller)."""
        frame = request_frame(bytes(data))
        name = protocol.peer_id(peer)
        refused = 0
        with trio.move_on_after(timeout):
            while True:
                item, reused = await self._checkout(peer, protocol_id)
                try:
                    await item.stream.write(frame)
                except trio.Cancelled:
                    await reset(item.stream)
                    raise
                except Exception as exc:
                    await reset(item.stream)
                    if reused:
                        continue  # a pooled stream the peer had ended: nothing went out
                    raise PeerUnreachable(f"stream to {name} broke: {exc!r}") from None
                try:
                    status, body = await item.reader.read_response(max_response)
                except MessageTooLarge:
                    await reset(item.stream)
                    raise
                except TruncatedFrame:
                    await reset(item.stream)
                    raise AnswerLost(
                        f"the answer of {name} on {protocol_id} was cut short (the request "
                        "may have been run)"
                    ) from None
                except MalformedFrame as exc:
                    await reset(item.stream)
                    raise RemoteError(f"malformed response on {protocol_id}: {exc}") from None
                except trio.Cancelled:
                    await reset(item.stream)
                    raise
                except Exception as exc:
                    # Sent, and the stream ended before any answer byte: the peer may
                    # have run it (a handler cut short, the connection lost). Never sent
                    # again here: that ran requests twice (round 21, R21-2).
                    await reset(item.stream)
                    raise AnswerLost(
                        f"stream to {name} ended before its answer on {protocol_id} "
                        f"(the request may have been run): {exc!r}"
                    ) from None
                if status == STATUS_RETRY:
                    # the peer ran none of it and ended the stream: again, on a new one
                    await reset(item.stream)
                    refused += 1
                    if refused >= REQUEST_TRIES:
                        raise PeerBusy(
                            f"{name} ran none of the request on {protocol_id} in "
                            f"{REQUEST_TRIES} tries ({body.decode('utf-8', 'replace')}): it "
                            "is serving as many streams as it can; try again later"
                        )
                    if not reused:  # a new stream refused: every slot was held
                        await trio.sleep(BUSY_PAUSE_S)
                    continue
                if status == STATUS_OK:
                    self._checkin(peer, protocol_id, item)
                    return body
                if status == STATUS_TOO_LARGE:
                    await reset(item.stream)
                else:
                    self._checkin(peer, protocol_id, item)
                raise error_for(status, body)
        raise NetworkTimeout(f"no answer from {name} on {protocol_id} within {timeout:g} s")

    async def _checkout(self, peer: PeerKey, protocol_id: str) -> tuple[_Pooled, bool]:
        pool = self._pool.get((peer, protocol_id))
        while pool:
            item = pool.pop()
            if item.reader.buffered == 0 and not _ended(item.stream):
                return item, True
            await reset(item.stream)
        try:
            await self._connect(peer)
        except (trio.Cancelled, NetworkError):
            raise
        except Exception as exc:  # a library's own error on a peer's address: not ours
            raise PeerUnreachable(f"cannot connect to {protocol.peer_id(peer)}: {exc!r}") from None
        try:
            stream = await self._host.new_stream(peer_id_of(peer), [protocol_id])
        except trio.Cancelled:
            raise
        except Exception as exc:
            cause = exc.__cause__ or exc
            text = f"{type(cause).__name__}: {cause}"
            if "protocol" in text.lower() and "not" in text.lower():
                raise ProtocolNotSupported(
                    f"peer {protocol.peer_id(peer)} does not serve {protocol_id}"
                ) from None
            raise PeerUnreachable(
                f"cannot open a stream to {protocol.peer_id(peer)}: {text}"
            ) from None
        return _Pooled(stream, FrameReader(stream.read)), False

    def _checkin(self, peer: PeerKey, protocol_id: str, item: _Pooled) -> None:
        pool = self._pool.setdefault((peer, protocol_id), [])
        if len(pool) < _POOL_PER_KEY and not self._closed:
            pool.append(item)
        elif self._nursery is not None:
            self._nursery.start_soon(reset, item.stream)
