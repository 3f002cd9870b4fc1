"""Pipe frames between the daemon and a worker (sandbox/_ipc.py), over real pipes: what a
worker sends is untrusted, so every bad frame must end in a clear error, never a hang."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox import _ipc
from sandbox._errors import WorkerProtocolError


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)


values = st.recursive(
    st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=64) | st.text(max_size=64),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=32,
)


@given(values)
@settings(max_examples=200, deadline=None)
def test_frames_round_trip(value: object) -> None:
    r, w = os.pipe()
    try:
        _ipc.send(w, {"v": value})
        assert _ipc.recv(r, max_bytes=1 << 20, deadline=time.monotonic() + 5) == {"v": value}
    finally:
        os.close(r)
        os.close(w)


def test_a_frame_larger_than_the_first_read_arrives_whole(pipe: tuple[int, int]) -> None:
    r, w = pipe
    blob = os.urandom(3 << 20)
    writer = threading.Thread(target=_ipc.send, args=(w, {"model": blob}))
    writer.start()
    assert _ipc.recv(r, max_bytes=8 << 20, deadline=time.monotonic() + 10) == {"model": blob}
    writer.join()


def test_an_oversized_frame_is_refused_unread(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, (1 << 30).to_bytes(4, "big") + b"x" * 100)
    with pytest.raises(WorkerProtocolError, match="exceeds"):
        _ipc.recv(r, max_bytes=1 << 20, deadline=time.monotonic() + 5)


def test_a_second_frame_unasked_is_refused(pipe: tuple[int, int]) -> None:
    r, w = pipe
    _ipc.send(w, {"op": "result"})
    _ipc.send(w, {"op": "result"})
    with pytest.raises(WorkerProtocolError, match="second frame"):
        _ipc.recv(r, max_bytes=1 << 20, deadline=time.monotonic() + 5)


def test_garbage_is_refused(pipe: tuple[int, int]) -> None:
    r, w = pipe
    body = b"\xc1\xc1\xc1"  # 0xc1 is never valid msgpack
    os.write(w, len(body).to_bytes(4, "big") + body)
    with pytest.raises(WorkerProtocolError, match="invalid frame"):
        _ipc.recv(r, max_bytes=1 << 20, deadline=time.monotonic() + 5)


@pytest.mark.parametrize("sent", [b"", b"\x00\x00", b"\x00\x00\x00\x10" + b"\x81"])
def test_a_worker_that_dies_mid_frame_is_gone(pipe: tuple[int, int], sent: bytes) -> None:
    r, w = pipe
    os.write(w, sent)
    os.close(w)
    with pytest.raises(_ipc.WorkerGone):
        _ipc.recv(r, max_bytes=1 << 20, deadline=time.monotonic() + 5)


@pytest.mark.parametrize("sent", [b"", b"\x00\x00\x00\x10" + msgpack.packb("part")])
def test_a_silent_worker_hits_the_deadline(pipe: tuple[int, int], sent: bytes) -> None:
    r, w = pipe
    os.write(w, sent)
    with pytest.raises(_ipc.Deadline):
        _ipc.recv(r, max_bytes=1 << 20, deadline=time.monotonic() + 0.05)


@pytest.mark.parametrize("together", [True, False])
def test_a_ran_frame_before_a_reply_is_announced_and_skipped(
    pipe: tuple[int, int], together: bool
) -> None:
    """A worker says its runtime call returned (an empty frame), then replies: read at
    once or apart, the reader is told, then gets the reply."""
    r, w = pipe
    told: list[bool] = []
    os.write(w, _ipc.RAN)
    later = threading.Timer(0 if together else 0.05, _ipc.send, args=(w, {"op": "result"}))
    later.start()
    if together:
        later.join()
    got = _ipc.recv(
        r, max_bytes=1 << 20, deadline=time.monotonic() + 5, on_ran=lambda: told.append(True)
    )
    later.join()
    assert got == {"op": "result"}
    assert told == [True]


def test_only_one_ran_frame_is_skipped(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, _ipc.RAN + _ipc.RAN)
    _ipc.send(w, {"op": "result"})
    with pytest.raises(WorkerProtocolError):
        _ipc.recv(r, max_bytes=1 << 20, deadline=time.monotonic() + 5, on_ran=lambda: None)


def test_a_ran_frame_where_none_may_come_is_refused(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, _ipc.RAN)
    with pytest.raises(WorkerProtocolError, match="invalid frame"):
        _ipc.recv(r, max_bytes=1 << 20, deadline=time.monotonic() + 5)


def test_a_worker_silent_after_its_ran_frame_hits_the_deadline(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, _ipc.RAN)
    with pytest.raises(_ipc.Deadline):
        _ipc.recv(r, max_bytes=1 << 20, deadline=time.monotonic() + 0.05, on_ran=lambda: None)


def test_a_request_read_exactly_leaves_the_go_behind_it(pipe: tuple[int, int]) -> None:
    """The daemon sends a run request, copies the inputs, then GO; a worker that reads
    its request must not take the GO with it, even when both are already there."""
    r, w = pipe
    _ipc.send(w, {"op": "run"})
    _ipc.go(w)
    assert _ipc.recv(r, max_bytes=1 << 20, exact=True) == {"op": "run"}
    _ipc.await_go(r)


def test_anything_but_go_is_refused(pipe: tuple[int, int]) -> None:
    r, w = pipe
    _ipc.send(w, {"op": "run"})
    with pytest.raises(WorkerProtocolError, match="inputs-ready"):
        _ipc.await_go(r)


def test_a_daemon_gone_before_go_is_gone(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, b"\x00\x00")
    os.close(w)
    with pytest.raises(_ipc.WorkerGone):
        _ipc.await_go(r)
