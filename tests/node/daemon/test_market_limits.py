"""The market protocol's size limits (review round 3, F3): a Result whose sealed output is
over the network's default 1 MiB request limit is still delivered (and the job verified);
an output too large for one market frame is refused by the provider with a failed Result
(``output_limit``) at once; a frame over the market's limit is refused by the network."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import trio

import ledger
import protocol
from node.config import NodeConfig
from node.daemon import Node
from node.daemon.market import (
    MARKET_PROTOCOL,
    MAX_MARKET_OUTPUT_BYTES,
    MAX_MARKET_REQUEST_BYTES,
    MAX_MARKET_SMALL_REQUEST_BYTES,
    split_frame,
)
from node.net import MAX_FRAME_BYTES, MemoryHub, MessageTooLarge, NetworkError
from sandbox.testing import InProcessRunner

from ...keys import key
from ._cluster import cluster


def _expand_model(n: int, outputs: int = 1) -> bytes:
    """An ONNX model whose ``outputs`` outputs are each its 1-element input repeated
    ``n`` times (``4 n`` bytes of float32 each)."""
    import onnx
    from onnx import TensorProto, helper

    names = [f"y{i}" for i in range(outputs)]
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, n])
    graph = helper.make_graph(
        [helper.make_node("Expand", ["x", "shape"], [name]) for name in names],
        "expand",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, n]) for name in names],
        initializer=[shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _inputs() -> dict[str, np.ndarray[Any, Any]]:
    return {"x": np.array([[0.5]], dtype=np.float32)}


async def _closed(node: Node, job_id: bytes) -> Any:
    record = node.jobs[job_id]
    while not record.closed:
        await record.changed.wait()
    return record


async def _done(node: Node, job_id: bytes) -> Any:
    """The job's record once its outcome is known (its escrow may close later)."""
    record = node.jobs[job_id]
    while record.done is None:
        await record.changed.wait()
    return record


async def test_a_result_with_an_output_over_one_mib_is_delivered_and_verified() -> None:
    # 1.6 MB of output in two tensors of 0.8 MB: over the 1 MiB default request limit (a
    # tensor's data is one byte string, which the protocol caps at 1 MiB)
    n = 200_000
    with trio.fail_after(60):
        async with cluster(2, runner=lambda i: InProcessRunner()) as cl:
            job_id = await cl.requester.submit_job(_expand_model(n, 2), _inputs(), redundancy=1)
            record = await _closed(cl.requester, job_id)
            assert record.done is not None and record.done.status == "verified", record.events
            assert record.outputs is not None
            for name in ("y0", "y1"):
                out = record.outputs[name]
                assert out.shape == (1, n) and float(out[0, -1]) == 0.5


@pytest.mark.parametrize(
    "n",
    [
        MAX_MARKET_OUTPUT_BYTES // 4 + 1_000,  # over what one market request carries
        (1 << 20) // 4 + 1_000,  # one tensor over the 1 MiB a byte string may hold
    ],
)
async def test_an_output_the_market_cannot_deliver_fails_at_once_with_output_limit(
    n: int,
) -> None:
    with trio.fail_after(60):
        async with cluster(1, runner=lambda i: InProcessRunner(), deadline_ms=30_000) as cl:
            started = trio.current_time()
            job_id = await cl.requester.submit_job(
                _expand_model(n), _inputs(), redundancy=1, max_retries=0
            )
            record = await _done(cl.requester, job_id)
            assert record.done is not None and record.done.status == "failed", record.events
            # told by the failed Result, not by the deadline passing
            assert trio.current_time() - started < 20, record.events
            assert any("output_limit" in str(e) for e in record.events), record.events


def test_the_market_frame_limit_is_within_the_hard_frame_limit() -> None:
    assert MAX_MARKET_REQUEST_BYTES <= MAX_FRAME_BYTES
    assert MAX_MARKET_OUTPUT_BYTES > 3 << 20


def test_a_market_frame_with_an_output_over_one_mib_splits_and_a_non_canonical_one_not() -> None:
    frame = protocol.pack([b"m" * 10, b"s" * 2_000_000])
    assert split_frame(frame) == (b"m" * 10, b"s" * 2_000_000)
    with pytest.raises(protocol.RemoteProtocolError):
        split_frame(frame + b"\x00")  # trailing bytes
    with pytest.raises(protocol.RemoteProtocolError):
        split_frame(b"\x92\xc5\x00\x01m\xc4\x00")  # bin 16 where bin 8 fits
    with pytest.raises(protocol.RemoteProtocolError):
        split_frame(protocol.pack([b"m", "text"]))


CH = "aimx-test-limits"


async def test_a_market_frame_over_one_mib_reaches_the_handler_one_over_its_limit_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import scheduler

    ckey, peer = key(1), key(7)
    genesis = ledger.make_genesis(CH, [bytes(ckey.verify_key)])
    hub = MemoryHub(CH, rng=random.Random(1))
    cfg = NodeConfig(chain_id=CH, roles=("coordinator", "requester"))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, hub.open(ckey) as cnet, hub.open(peer) as pnet:
            node = Node(ckey, cfg, cnet, genesis)
            await nursery.start(node.run)
            target = bytes(ckey.verify_key)

            async def send(size: int) -> str:
                frame = protocol.pack([b"x" * 10, b"s" * size])
                try:
                    await pnet.request(target, MARKET_PROTOCOL, frame, timeout=5)
                except NetworkError as exc:
                    return f"{type(exc).__name__}: {exc}"
                return "answered"

            # a peer holding no award of ours: refused from the length past a message's
            # size (round 40, F1: a stranger's 4 MiB frames were held whole)
            small = await send(MAX_MARKET_SMALL_REQUEST_BYTES)
            assert small.startswith("MessageTooLarge"), small
            assert f"limit of {MAX_MARKET_SMALL_REQUEST_BYTES}" in small
            assert "malformed market frame" in await send(60_000)
            # a provider holding an award of ours (its Result carries the output)
            monkeypatch.setattr(scheduler.Requester, "awarded_to", lambda self, p: True)
            # past the frame: the (bogus) message is refused by the market itself
            assert "malformed market frame" in await send(3_000_000)
            too_large = await send(MAX_MARKET_REQUEST_BYTES)
            assert too_large.startswith("MessageTooLarge"), too_large
            nursery.cancel_scope.cancel()


async def test_a_contributor_takes_no_large_market_frame() -> None:
    """A node that requests nothing takes nothing past a signed message's size."""
    ckey, peer = key(1), key(7)
    genesis = ledger.make_genesis(CH, [bytes(ckey.verify_key)])
    hub = MemoryHub(CH, rng=random.Random(1))
    cfg = NodeConfig(chain_id=CH, roles=("coordinator",))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, hub.open(ckey) as cnet, hub.open(peer) as pnet:
            node = Node(ckey, cfg, cnet, genesis)
            await nursery.start(node.run)
            assert node.requester is None
            frame = protocol.pack([b"x" * 10, b"s" * 100_000])
            with pytest.raises(MessageTooLarge, match="limit of 66560"):
                await pnet.request(bytes(ckey.verify_key), MARKET_PROTOCOL, frame, timeout=5)
            nursery.cancel_scope.cancel()


async def test_a_strangers_sealed_output_for_a_job_it_was_never_awarded_is_not_opened(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Review round 4, R4-5: a Result for a made-up job with a 3 MiB box sealed to our key
    # bought a decryption of the box (19.5 ms, 16 MiB transient) before the requester
    # machine dropped it. Now the box is opened only for a replica awaiting its output.
    import hashlib

    import scheduler

    opened: list[int] = []
    real_open = scheduler.open_sealed

    def counting_open(*args: Any) -> bytes:
        opened.append(len(args[1]))
        return real_open(*args)

    monkeypatch.setattr(scheduler, "open_sealed", counting_open)
    # a provider holding an award of another job: its large frames get through
    monkeypatch.setattr(scheduler.Requester, "awarded_to", lambda self, p: True)
    ckey, peer = key(1), key(7)
    genesis = ledger.make_genesis(CH, [bytes(ckey.verify_key)])
    hub = MemoryHub(CH, rng=random.Random(1))
    cfg = NodeConfig(chain_id=CH, roles=("coordinator", "requester"))
    box = random.Random(2).randbytes(3_000_000)
    result = protocol.Result(
        job_id=bytes(range(32)),
        provider=bytes(peer.verify_key),
        replica=0,
        outcome="ok",
        message="",
        output_commitment=bytes(32),
        output_hash=hashlib.blake2b(box, digest_size=32).digest(),
        output_size=len(box),
        key_hash=bytes(32),
        determinism_class="ort-1.32.0/cpu/avx2/extended",
        usage=protocol.Usage(cpu_ms=1, wall_ms=1, peak_memory_kb=1, gpu_ms=0),
        finished_ms=1,
    )
    frame = protocol.pack([protocol.sign(result, peer, CH).raw, box])
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, hub.open(ckey) as cnet, hub.open(peer) as pnet:
            node = Node(ckey, cfg, cnet, genesis)
            await nursery.start(node.run)
            for _ in range(3):
                await pnet.request(bytes(ckey.verify_key), MARKET_PROTOCOL, frame, timeout=5)
            assert opened == []
            # the driver still opens the boxes it awaits: the machine says which
            assert node.requester is not None
            assert not node.requester.expects_output(result.job_id, result.provider, 0)
            nursery.cancel_scope.cancel()
