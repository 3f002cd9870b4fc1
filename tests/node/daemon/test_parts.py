"""The daemon's small parts: content encoding, the content store, the timer wheel."""

from __future__ import annotations

import numpy as np
import pytest
import trio
import trio.testing

import protocol
from node.daemon._clock import Clock
from node.daemon._codec import (
    Array,
    outputs_bytes,
    outputs_from_bytes,
    tensor_bytes,
    tensor_from_bytes,
)
from node.daemon._content_store import ContentStore
from node.daemon._errors import JobSubmitError
from node.daemon._timers import Timers


def test_tensor_and_output_bytes_round_trip_and_are_canonical() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert np.array_equal(tensor_from_bytes(tensor_bytes(x)), x)
    assert tensor_bytes(x) == tensor_bytes(np.asfortranarray(x))  # layout does not matter
    assert tensor_bytes(x) == tensor_bytes(x.astype(">f4"))  # nor byte order
    outs: dict[str, Array] = {"b": np.ones(2, np.int64), "a": np.zeros((1, 2), np.float16)}
    data = outputs_bytes(outs)
    assert data == outputs_bytes(dict(reversed(list(outs.items()))))
    back = outputs_from_bytes(data)
    assert list(back) == ["a", "b"] and all(np.array_equal(back[k], outs[k]) for k in outs)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        protocol.pack(["<f4", [2], b"\x00" * 4]),  # too little data for the shape
        protocol.pack(["<c8", [1], b"\x00" * 8]),  # not an allowed dtype
        protocol.pack(["<f4", [-1], b""]),
        protocol.pack(["<f4", [1]]),
    ],
)
def test_malformed_tensor_bytes_are_remote_protocol_errors(data: bytes) -> None:
    with pytest.raises(protocol.RemoteProtocolError):
        tensor_from_bytes(data)
    with pytest.raises(protocol.RemoteProtocolError):
        outputs_from_bytes(protocol.pack([["x", data]]))


def test_unsupported_input_dtype_is_a_submit_error() -> None:
    with pytest.raises(JobSubmitError):
        tensor_bytes(np.array(["text"]))


def test_content_store_pins_by_job_and_caches_within_bounds() -> None:
    store = ContentStore(cache_bytes=10)
    a = store.pin(b"job1", b"a" * 8)
    b = store.pin(b"job2", b"b" * 8)
    assert store.get(a) == b"a" * 8 and store.get(b) == b"b" * 8
    store.release(b"job1")  # a becomes a cache entry
    store.cache(b"c" * 8, b"C")  # evicts a: the cache holds 10 bytes
    assert store.get(a) is None and store.get(b"C") == b"c" * 8
    assert store.get(b) == b"b" * 8  # still pinned by job2


async def test_timers_fire_in_order_move_and_cancel(autojump_clock: trio.testing.MockClock) -> None:
    clock = Clock(base_ms=1_000_000)
    timers = Timers(clock)
    fired: list[tuple[str, int]] = []
    done = trio.Event()

    def fire(key: object) -> None:
        assert isinstance(key, str)
        fired.append((key, clock.now_ms()))
        if key == "last":
            done.set()

    timers.set("b", 1_000_200)
    timers.set("a", 1_000_100)
    timers.set("gone", 1_000_050)
    timers.cancel("gone")
    timers.set("b", 1_000_300)  # moved
    timers.set("last", 1_000_400)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run, fire)
        with trio.fail_after(10):
            await done.wait()
        nursery.cancel_scope.cancel()
    assert fired == [("a", 1_000_100), ("b", 1_000_300), ("last", 1_000_400)]
    assert len(timers) == 0


def test_job_records_forget_the_oldest_closed_ones_past_their_limit() -> None:
    from node.daemon._jobs import JobRecord, JobRecords

    from ...ledger.helpers import ALICE, job_spec

    records = JobRecords(limit=10)
    spec = job_spec(ALICE).message
    open_ids = [bytes([0, i]) + bytes(30) for i in range(3)]
    for job_id in open_ids:
        records.add(JobRecord(job_id, spec, 0, "m"))
    for i in range(40):
        record = JobRecord(bytes([1, i]) + bytes(30), spec, 0, "m")
        record.closed = True
        records.add(record)
        assert len(records) <= 10
    assert all(j in records for j in open_ids)  # a running job is never forgotten
    assert bytes([1, 39]) + bytes(30) in records  # the newest closed ones are kept
