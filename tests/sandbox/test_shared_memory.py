"""The tensor data path: the shared region between the daemon and a worker, and what the
daemon refuses when a worker describes its outputs wrongly (specs/sandbox.md, section 9)."""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator

import numpy as np
import pytest

import sandbox
from sandbox import _shm
from sandbox._tensors import commitment_of, raw_data_hash
from sandbox.testing import run_payload

from .conftest import worker_processes


@pytest.fixture
def region() -> Iterator[_shm.HostRegion]:
    r = _shm.HostRegion("aimx-test", _shm.region_size(1 << 16))
    yield r
    r.close()


def test_outputs_round_trip_and_are_copied_out(region: _shm.HostRegion) -> None:
    outputs = {
        "b": np.array([[True, False, True]]),
        "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
        "strided": np.arange(12, dtype=np.float32).reshape(3, 4).T,
        "scalar": np.array(2.5, np.float64),
        "empty": np.zeros((0, 7), np.uint8),
    }
    worker = _shm.WorkerRegion(region.fd, region.size)
    entries = worker.write_outputs(outputs)
    assert [e[0] for e in entries] == sorted(outputs)
    assert all(int(e[3]) % _shm.ALIGN == 0 for e in entries)  # type: ignore[call-overload]
    got, hashed = region.read_outputs(entries, max_bytes=1 << 16, digest=raw_data_hash)
    for name, array in outputs.items():
        assert got[name].dtype == array.dtype.newbyteorder("<")
        assert np.array_equal(got[name], array)
    worker.map[:64] = b"\xff" * 64  # the worker writes again: what the daemon holds stays
    assert np.array_equal(got["b"], outputs["b"])
    assert commitment_of(hashed) == sandbox.output_commitment(outputs)
    assert sandbox.output_commitment(got) == sandbox.output_commitment(outputs)


def test_inputs_are_laid_out_for_the_worker(region: _shm.HostRegion) -> None:
    arrays = [np.arange(5, dtype=">f8"), np.ones((2, 3), np.int8), np.zeros((0,), np.int64)]
    entries = region.place_inputs(arrays, reserve=region.size)
    region.copy_inputs(arrays, entries)
    views = _shm.WorkerRegion(region.fd, region.size).inputs(entries)
    for view, array in zip(views, arrays, strict=True):
        assert view.shape == array.shape
        assert np.array_equal(view, array)


def test_region_grows_for_large_inputs_and_never_shrinks(region: _shm.HostRegion) -> None:
    size = region.size
    big = np.ones(size, np.uint8)
    entries = region.place_inputs([big, big], reserve=0)
    region.copy_inputs([big, big], entries)
    assert region.size >= 2 * size and os.fstat(region.fd).st_size == region.size
    worker = _shm.WorkerRegion(region.fd, size)
    worker.remap(region.size)
    assert all(np.array_equal(v, big) for v in worker.inputs(entries))
    region.ensure(size)
    assert region.size >= 2 * size


def test_a_worker_cannot_shrink_or_seal_the_region(region: _shm.HostRegion) -> None:
    with pytest.raises(PermissionError):
        os.ftruncate(region.fd, 0)
    with pytest.raises(PermissionError):
        fcntl.fcntl(region.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_GROW)


def test_outputs_that_do_not_fit_are_refused_in_the_worker(region: _shm.HostRegion) -> None:
    worker = _shm.WorkerRegion(region.fd, region.size)
    with pytest.raises(OverflowError):
        worker.write_outputs({"y": np.zeros(region.size + 1, np.uint8)})


BAD_ENTRIES = [
    ("not a list", "must be a list"),
    ([["y", "<f4", [4], 0]], r"\[name, dtype, dims, offset, nbytes\]"),
    ([["y", "<f4", [4], 0, 16], ["y", "<f4", [4], 64, 16]], "distinct"),
    ([[1, "<f4", [4], 0, 16]], "distinct strings"),
    ([["y", "<c8", [4], 0, 32]], "unsupported dtype"),
    ([["y", "<f4", [-1], 0, 0]], "non-negative"),
    ([["y", "<f4", [True], 0, 4]], "non-negative"),
    ([["y", "<f4", [1] * 33, 0, 4]], "at most 32"),
    ([["y", "<f4", [4], 0, 15]], "does not match"),
    ([["y", "<f4", [4], 1 << 40, 16]], "out of place"),
    ([["y", "<f4", [4], -64, 16]], "out of place"),
    ([["y", "<f4", [4], 8, 16]], "out of place"),
    ([["a", "<f4", [4], 64, 16], ["b", "<f4", [4], 64, 16]], "out of place"),
    ([["y", "<f4", [4], 0.0, 16]], "integers"),
    ([["y", "|u1", [1 << 17], 0, 1 << 17]], "exceed the limit"),
    ([["y", "|b1", [4], 0, 4]], "0 or 1"),
]


@pytest.mark.parametrize(("entries", "reason"), BAD_ENTRIES)
def test_malformed_outputs_are_refused(
    region: _shm.HostRegion, entries: object, reason: str
) -> None:
    region.map[:4] = b"\x00\x01\x02\x00"
    with pytest.raises(_shm.MalformedOutputs, match=reason):
        region.read_outputs(entries, max_bytes=1 << 16, digest=raw_data_hash)


# --- a hostile worker, end to end ----------------------------------------------------------


def shrink_the_region() -> str:
    import os

    for fd in range(3, 256):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/memfd:aimx-job"):
            try:
                os.ftruncate(fd, 0)
            except OSError as exc:
                return f"refused errno {exc.errno}"
            return "shrunk"
    return "no region"


def forge_result(entries: list[object]) -> str:
    """Put garbage in the shared region, write a result frame of our own on the
    worker's reply pipe, and wait to be killed: the real reply would follow it, and the
    daemon would refuse the pair as a second frame before looking at ours."""
    import fcntl
    import os
    import time

    import msgpack

    memfds, pipes = [], []
    for fd in range(3, 256):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        except OSError:
            continue
        if target.startswith("/memfd:aimx-job"):
            memfds.append(fd)
        elif target.startswith("pipe:") and mode == os.O_WRONLY:
            pipes.append(fd)
    for fd in memfds:
        os.pwrite(fd, b"\x02" * 64, 0)
    frame = msgpack.packb({"op": "result", "outputs": entries}, use_bin_type=True)
    for fd in pipes:
        os.write(fd, len(frame).to_bytes(4, "big") + frame)
    time.sleep(60)
    return f"{len(memfds)} regions, {len(pipes)} pipes"


def test_a_job_cannot_shrink_the_region(box: sandbox.Sandbox) -> None:
    outcome = run_payload(box, shrink_the_region)
    assert outcome.kind == "ok", outcome.message
    assert outcome.value == repr(f"refused errno {errno.EPERM}")


@pytest.mark.parametrize(
    "entries",
    [
        [["y", "<f4", [4], 1 << 40, 16]],
        [["y", "<f8", [1 << 30], 0, 8 << 30]],
        [["y", "|b1", [64], 0, 64]],
        [["y"]],
    ],
)
def test_forged_outputs_end_as_crashed(box: sandbox.Sandbox, entries: list[object]) -> None:
    before = set(worker_processes())
    outcome = run_payload(box, forge_result, entries)
    assert outcome.kind == "crashed"
    assert "malformed outputs" in outcome.message
    assert set(worker_processes()) == before
    tiny = sandbox.tiny_model_path().read_bytes()
    x = {"x": np.ones((1, 16), np.float32)}
    assert box.run(sandbox.JobRequest("onnx", tiny, x)).ok  # the daemon carries on
