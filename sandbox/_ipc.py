"""Frames on the pipes between the daemon and a worker: 4-byte big-endian length + msgpack."""

from __future__ import annotations

import os
import select
import time
from typing import Any

import msgpack

from ._errors import WorkerProtocolError

HEADER = 4


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


def _read_exact(fd: int, n: int, deadline: float | None) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    pos = 0
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    while pos < n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Deadline()
            if not poller.poll(max(1, int(remaining * 1000))):
                continue
        got = os.readv(fd, [view[pos:]])
        if got == 0:
            raise WorkerGone()
        pos += got
    return buf


def recv(fd: int, *, max_bytes: int, deadline: float | None = None) -> Any:
    """Read one frame; WorkerGone on EOF, Deadline on timeout, WorkerProtocolError if bad."""
    size = int.from_bytes(_read_exact(fd, HEADER, deadline), "big")
    if size > max_bytes:
        raise WorkerProtocolError(f"worker frame of {size} bytes exceeds {max_bytes}")
    data = _read_exact(fd, size, deadline)
    try:
        return msgpack.unpackb(
            data, raw=False, strict_map_key=True, max_bin_len=max_bytes, max_str_len=max_bytes
        )
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise WorkerProtocolError(f"worker sent an invalid frame: {exc}") from None
