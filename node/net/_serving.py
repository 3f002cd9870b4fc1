"""Calling a request handler and turning its outcome into a response, for every
implementation: the same rules for errors, limits and counting everywhere."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import protocol

from ._errors import (
    MessageTooLarge,
    NetworkError,
    PeerBusy,
    ProtocolNotSupported,
    RemoteError,
    RequestRejected,
)
from ._framing import (
    STATUS_ERROR,
    STATUS_OK,
    STATUS_RETRY,
    STATUS_TOO_LARGE,
    STATUS_UNSUPPORTED,
)
from ._interface import NetworkCounters, PeerKey, RequestHandler
from ._limits import DEFAULT_SMALL_REQUEST_BYTES, MAX_FRAME_BYTES

_MAX_ERROR_TEXT = 1024


@dataclass(slots=True)
class HandlerEntry:
    handler: RequestHandler
    max_request_bytes: int
    large_from: Callable[[PeerKey], bool] | None = None
    small_request_bytes: int = DEFAULT_SMALL_REQUEST_BYTES

    def over_limit(self, sender: PeerKey, length: int) -> int | None:
        """The limit a request of ``length`` bytes from ``sender`` is over, or None."""
        if length > self.max_request_bytes:
            return self.max_request_bytes
        if (
            self.large_from is not None
            and length > self.small_request_bytes
            and not self.large_from(sender)
        ):
            return self.small_request_bytes
        return None


def _text(message: str) -> bytes:
    return message.encode("utf-8", "replace")[:_MAX_ERROR_TEXT]


async def answer(
    entry: HandlerEntry | None,
    sender: PeerKey,
    protocol_id: str,
    data: bytes,
    counters: NetworkCounters,
    log: logging.Logger,
) -> tuple[int, bytes]:
    """Run the handler for one request; returns ``(status, body)``.

    A handler's :class:`RequestRejected` or :class:`protocol.RemoteProtocolError` (the
    requester sent a bad message) becomes an error answer with its text; anything else is
    logged, counted in ``handler_errors`` and answered with a generic error.
    """
    if entry is None:
        return STATUS_UNSUPPORTED, _text(f"the peer does not serve {protocol_id}")
    if (limit := entry.over_limit(sender, len(data))) is not None:
        counters.requests_rejected += 1
        return STATUS_TOO_LARGE, _text(too_large(len(data), limit, protocol_id))
    try:
        response = await entry.handler(sender, data)
    except (RequestRejected, protocol.RemoteProtocolError) as exc:
        counters.requests_served += 1
        return STATUS_ERROR, _text(str(exc))
    except Exception:
        counters.handler_errors += 1
        log.exception(
            "the handler for %s failed on a request from peer %s",
            protocol_id,
            protocol.peer_id(sender),
        )
        return STATUS_ERROR, _text(f"the peer failed to handle the request on {protocol_id}")
    if not isinstance(response, bytes | bytearray) or len(response) > MAX_FRAME_BYTES:
        counters.handler_errors += 1
        log.error("the handler for %s returned a non-bytes or oversized response", protocol_id)
        return STATUS_ERROR, _text(f"the peer failed to handle the request on {protocol_id}")
    counters.requests_served += 1
    return STATUS_OK, bytes(response)


def too_large(length: int, limit: int, protocol_id: str) -> str:
    return f"request of {length} bytes is over the peer's limit of {limit} for {protocol_id}"


def error_for(status: int, body: bytes) -> NetworkError:
    """The requester's exception for a non-ok response."""
    text = body.decode("utf-8", "replace")
    if status == STATUS_TOO_LARGE:
        return MessageTooLarge(text)
    if status == STATUS_UNSUPPORTED:
        return ProtocolNotSupported(text)
    if status == STATUS_RETRY:
        return PeerBusy(f"the peer ran none of the request: {text}")
    return RemoteError(text)
