"""Frames on the pipes between the daemon and a worker: 4-byte big-endian length + msgpack."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from typing import Any

import msgpack

from ._errors import WorkerProtocolError

HEADER = 4
_FIRST_READ = 1 << 16
#: An empty frame: a worker's runtime call for a ``run`` has returned, and the reply
#: follows once the worker has checked the outputs and measured the job. The daemon, woken
#: by it, is awake when the reply comes (specs/sandbox.md §9).
RAN = bytes(HEADER)
#: An empty frame the other way: a ``run``'s inputs are in place. The daemon sends the
#: request first and copies the inputs while the worker wakes and prepares the run.
GO = RAN


class WorkerGone(Exception):
    """The worker closed its end of the pipe (it exited or was killed)."""


class Deadline(Exception):
    """No complete frame arrived before the deadline."""


def send(fd: int, obj: Any) -> None:
    data = msgpack.packb(obj, use_bin_type=True)
    parts = [memoryview(len(data).to_bytes(HEADER, "big")), memoryview(data)]
    while parts:
        n = os.writev(fd, parts)
        while parts and n >= len(parts[0]):
            n -= len(parts[0])
            parts.pop(0)
        if parts and n:
            parts[0] = parts[0][n:]


def go(fd: int) -> None:
    """Send :data:`GO`."""
    os.write(fd, GO)


def await_go(fd: int) -> None:
    """Wait for :data:`GO` (the worker's side; it trusts the daemon)."""
    got = b""
    while len(got) < HEADER:
        chunk = os.read(fd, HEADER - len(got))
        if not chunk:
            raise WorkerGone()
        got += chunk
    if got != GO:
        raise WorkerProtocolError("expected the inputs-ready frame")


def _wait_readable(poller: select.poll, deadline: float | None) -> bool:
    if deadline is None:
        return True
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise Deadline()
    return bool(poller.poll(max(1, int(remaining * 1000))))


def _read_into(fd: int, view: memoryview, deadline: float | None, poller: select.poll) -> None:
    pos = 0
    while pos < len(view):
        if not _wait_readable(poller, deadline):
            continue
        got = os.readv(fd, [view[pos:]])
        if got == 0:
            raise WorkerGone()
        pos += got


def recv(
    fd: int,
    *,
    max_bytes: int,
    deadline: float | None = None,
    on_ran: Callable[[], object] | None = None,
    exact: bool = False,
) -> Any:
    """Read one frame; WorkerGone on EOF, Deadline on timeout, WorkerProtocolError if bad.
    With ``on_ran``, one :data:`RAN` frame may come first: it is called then, and the
    frame after it is read. ``exact``: read no byte beyond the frame (a worker reading a
    request: the :data:`GO` behind it is read later).

    A pipe carries one frame at a time (a request, then its reply), so the first read asks
    for up to 64 KiB and usually gets the whole frame in one system call; bytes beyond the
    frame mean the peer sent a second one unasked, which is refused."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    first = _read_header(fd, b"", deadline, poller, exact)
    if on_ran is not None and first.startswith(RAN):
        on_ran()
        first = _read_header(fd, first[HEADER:], deadline, poller, exact)
    size = int.from_bytes(first[:HEADER], "big")
    if size > max_bytes:
        raise WorkerProtocolError(f"worker frame of {size} bytes exceeds {max_bytes}")
    if len(first) > HEADER + size:
        raise WorkerProtocolError("a second frame arrived before the first was answered")
    data = bytearray(size)
    view = memoryview(data)
    have = len(first) - HEADER
    view[:have] = first[HEADER:]
    _read_into(fd, view[have:], deadline, poller)
    try:
        return msgpack.unpackb(
            data, raw=False, strict_map_key=True, max_bin_len=max_bytes, max_str_len=max_bytes
        )
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise WorkerProtocolError(f"worker sent an invalid frame: {exc}") from None


def _read_header(
    fd: int, first: bytes, deadline: float | None, poller: select.poll, exact: bool
) -> bytes:
    """``first`` read on until it holds at least a frame header (``exact``: and no more)."""
    while len(first) < HEADER:
        if not _wait_readable(poller, deadline):
            continue
        chunk = os.read(fd, HEADER - len(first) if exact else _FIRST_READ)
        if not chunk:
            raise WorkerGone()
        first += chunk
    return first
