"""Request/response frames on a byte stream (specs/network.md, "Request/response").

A request is ``uvarint(length) || bytes``; a response is ``status || uvarint(length) ||
bytes`` with status 0 (ok: the bytes are the response), 1 (error: UTF-8 text), 2 (too
large: UTF-8 text), 3 (unsupported protocol: UTF-8 text) or 4 (retry: UTF-8 text; the
server read none of the request into a handler and ends the stream: send it again on a new
one). One stream carries any number of request/response pairs in turn.
Pure parsing over an ``async read(n)`` callable: no libp2p here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ._errors import MessageTooLarge, NetworkError

STATUS_OK = 0
STATUS_ERROR = 1
STATUS_TOO_LARGE = 2
STATUS_UNSUPPORTED = 3
STATUS_RETRY = 4
STATUSES = (STATUS_OK, STATUS_ERROR, STATUS_TOO_LARGE, STATUS_UNSUPPORTED, STATUS_RETRY)
_MAX_VARINT_BYTES = 9  # enough for any length up to 2**63


class MalformedFrame(NetworkError):
    """The peer sent bytes that are not a frame, or stopped in the middle of one."""


class TruncatedFrame(MalformedFrame):
    """The stream ended in the middle of a frame: the sender stopped, or the stream was
    reset. (Not a bad frame: an answer cut short says nothing about the request.)"""


class EndOfStream(NetworkError):
    """The stream ended cleanly between two frames."""


def uvarint(n: int) -> bytes:
    if n < 0:
        raise ValueError("uvarint of a negative number")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def request_frame(data: bytes) -> bytes:
    return uvarint(len(data)) + data


def response_frame(status: int, data: bytes) -> bytes:
    return bytes([status]) + uvarint(len(data)) + data


class FrameReader:
    """Reads frames from ``read(n) -> bytes`` (``b""`` or an EOFError at end of stream)."""

    def __init__(self, read: Callable[[int], Awaitable[bytes]], chunk: int = 64 * 1024) -> None:
        self._read = read
        self._chunk = chunk
        self._buffer = bytearray()

    @property
    def held(self) -> bytearray:
        """The bytes read and not yet taken as a frame (the node's budget counts them)."""
        return self._buffer

    async def _fill(self, at_boundary: bool) -> None:
        try:
            data = await self._read(self._chunk)
        except EOFError:
            data = b""
        if not data:
            if at_boundary and not self._buffer:
                raise EndOfStream("the stream ended")
            raise TruncatedFrame("the stream ended in the middle of a frame")
        self._buffer += data

    async def _byte(self, at_boundary: bool) -> int:
        if not self._buffer:
            await self._fill(at_boundary)
        value = self._buffer[0]
        del self._buffer[0]
        return value

    async def _uvarint(self, at_boundary: bool) -> int:
        result = 0
        for i in range(_MAX_VARINT_BYTES):
            byte = await self._byte(at_boundary and i == 0)
            result |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if i > 0 and byte == 0:
                    raise MalformedFrame("a frame length is not minimally encoded")
                return result
        raise MalformedFrame("a frame length is longer than 9 bytes")

    async def _exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            await self._fill(False)
        # one copy: a slice of the buffer, then bytes of it, held a 4 MiB frame three
        # times over (round 40, F1)
        if len(self._buffer) == n:
            data = bytes(self._buffer)
            self._buffer = bytearray()
            return data
        with memoryview(self._buffer) as view:
            data = bytes(view[:n])
        del self._buffer[:n]
        return data

    async def read_request(self, limit: int) -> bytes:
        """The next request's bytes. :class:`EndOfStream` at a clean end,
        :class:`MessageTooLarge` (before reading the body) or :class:`MalformedFrame`."""
        length = await self.read_length()
        if length > limit:
            raise MessageTooLarge(f"request of {length} bytes is over the limit of {limit}")
        return await self.read_body(length)

    async def read_length(self) -> int:
        """The next request's length (its bytes follow: :meth:`read_body`)."""
        return await self._uvarint(True)

    async def read_body(self, length: int) -> bytes:
        return await self._exactly(length)

    async def read_response(self, limit: int) -> tuple[int, bytes]:
        """The next response's status and bytes. :class:`EndOfStream` if the stream
        ended before its first byte (the server never answered), :class:`TruncatedFrame`
        if it ended within it."""
        status = await self._byte(True)
        if status not in STATUSES:
            raise MalformedFrame(f"unknown response status {status}")
        length = await self._uvarint(False)
        cap = limit if status == STATUS_OK else 4096
        if length > cap:
            raise MessageTooLarge(f"response of {length} bytes is over the limit of {cap}")
        return status, await self._exactly(length)

    async def wait_data(self) -> None:
        """Wait until at least one byte is buffered; :class:`EndOfStream` at a clean end."""
        if not self._buffer:
            await self._fill(True)

    @property
    def buffered(self) -> int:
        """Bytes read from the stream but not yet returned."""
        return len(self._buffer)
