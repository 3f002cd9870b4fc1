"""Request/response frames: round trips over any chunking, and every way to be malformed."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from node.net import MessageTooLarge
from node.net._framing import (
    STATUS_OK,
    STATUSES,
    EndOfStream,
    FrameReader,
    MalformedFrame,
    request_frame,
    response_frame,
    uvarint,
)


def chunked(data: bytes, cuts: list[int]) -> FrameReader:
    pieces, last = [], 0
    for cut in sorted(set(c % (len(data) + 1) for c in cuts)):
        pieces.append(data[last:cut])
        last = cut
    pieces.append(data[last:])
    queue = [p for p in pieces if p]

    async def read(n: int) -> bytes:
        return queue.pop(0) if queue else b""

    return FrameReader(read, chunk=7)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=4), st.lists(st.integers(0, 2000)))
def test_requests_round_trip_over_any_chunking(bodies: list[bytes], cuts: list[int]) -> None:
    async def main() -> None:
        reader = chunked(b"".join(request_frame(b) for b in bodies), cuts)
        for body in bodies:
            assert await reader.read_request(1000) == body
        with pytest.raises(EndOfStream):
            await reader.read_request(1000)

    trio.run(main)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=500), st.sampled_from(STATUSES))
def test_responses_round_trip(body: bytes, status: int) -> None:
    async def main() -> None:
        reader = chunked(response_frame(status, body), [3, 50])
        assert await reader.read_response(4096) == (status, body)

    trio.run(main)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=64))
def test_garbage_never_escapes_our_errors(garbage: bytes) -> None:
    async def main() -> None:
        reader = chunked(garbage, [])
        try:
            while True:
                await reader.read_request(16)
        except (EndOfStream, MalformedFrame, MessageTooLarge):
            pass

    trio.run(main)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (uvarint(10) + b"abc", MalformedFrame),  # half frame
        (b"\x80\x00", MalformedFrame),  # length not minimally encoded
        (b"\xff" * 12, MalformedFrame),  # length too long
        (uvarint(1001) + b"x", MessageTooLarge),  # over the limit, body never read
    ],
)
async def test_malformed_requests(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        await chunked(data, []).read_request(1000)


async def test_unknown_status_and_oversized_response() -> None:
    with pytest.raises(MalformedFrame):
        await chunked(b"\x09\x00", []).read_response(10)
    with pytest.raises(MessageTooLarge):
        await chunked(response_frame(STATUS_OK, b"x" * 11), []).read_response(10)
