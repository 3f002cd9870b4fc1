"""Building a job for submission: the checks on what a user asks for and the signed
JobSpec's fields. Pure: no I/O, no clock (the node passes the time and the ledger height).

An ONNX model and its inputs pass the sandbox's own admission rules here (``check_model``,
``check_inputs``: the functions a contributor's sandbox runs, no worker), before anything is
locked: a job every contributor would reject is refused up front with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

import protocol
import sandbox
import scheduler
from protocol import InputRef, JobSpec, Requirements, VerificationPolicy, job_class

from ._codec import MAX_TENSOR_BYTES, Array, tensor_bytes
from ._errors import JobSubmitError
from .content import MAX_CONTENT_BYTES

#: A requester's claim window and settle margin (network parameters; specs/marketplace.md).
CLAIM_WINDOW_BLOCKS = 10
SETTLE_MARGIN_BLOCKS = 2
#: Jobs run on the CPU provider until requirements are asked for (specs/marketplace.md).
EXECUTION_PROVIDER = "CPUExecutionProvider"


def check_request(
    model: bytes,
    inputs: Mapping[str, Array],
    *,
    runtime: str,
    redundancy: int,
    max_retries: int,
    max_price: int,
    deadline_ms: int,
) -> list[tuple[str, bytes]]:
    """Refuse what cannot make a job (JobSubmitError with what to change); returns the
    inputs' canonical bytes by name, in name order. ``deadline_ms`` is from submission."""
    if runtime not in protocol.RUNTIMES:
        raise JobSubmitError(f"unknown runtime {runtime!r}; use one of {protocol.RUNTIMES}")
    if not model:
        raise JobSubmitError("the model is empty")
    if not 1 <= redundancy <= 16:
        raise JobSubmitError("redundancy must be between 1 and 16")
    if not 0 <= max_retries <= 16:
        raise JobSubmitError("max_retries must be between 0 and 16")
    if not inputs:
        raise JobSubmitError("a job needs at least one input tensor")
    if len(model) > MAX_CONTENT_BYTES:
        raise JobSubmitError(f"the model is over {MAX_CONTENT_BYTES} bytes")
    if max_price < 1:
        raise JobSubmitError("max_price must be at least 1 micro-credit a replica")
    if not 1 <= deadline_ms <= scheduler.MAX_DEADLINE_MS:
        raise JobSubmitError(
            f"deadline_ms must be between 1 and {scheduler.MAX_DEADLINE_MS} "
            f"({scheduler.MAX_DEADLINE_MS // 3_600_000} h: providers refuse later deadlines)"
        )
    blobs: list[tuple[str, bytes]] = []
    for name, array in sorted(inputs.items()):
        if np.asarray(array).nbytes > MAX_TENSOR_BYTES:
            raise JobSubmitError(
                f"input {name!r} holds {np.asarray(array).nbytes} bytes; a tensor may hold at "
                f"most {MAX_TENSOR_BYTES} (1 MiB) on the network: split it into several inputs"
            )
        data = tensor_bytes(np.asarray(array))
        if len(data) > MAX_CONTENT_BYTES:
            raise JobSubmitError(f"input {name!r} is over {MAX_CONTENT_BYTES} bytes")
        blobs.append((name, data))
    if runtime == "onnx":
        check_admission(model, inputs)
    return blobs


def _signature(info: sandbox.ModelInfo) -> str:
    """The model's inputs as a user writes them: ``x <f4 [?, 16]``."""
    return ", ".join(
        f"{t.name} {t.dtype} {'any shape' if t.shape is None else [d or '?' for d in t.shape]}"
        for t in info.inputs
    ).replace("'?'", "?")


def check_admission(model: bytes, inputs: Mapping[str, Array]) -> sandbox.ModelInfo:
    """The sandbox's admission of an ONNX model and its inputs, as every contributor runs
    it (default limits): :class:`JobSubmitError` naming the problem and the fix."""
    try:
        info = sandbox.check_model(model)
    except sandbox.AdmissionError as exc:
        why = str(exc).removesuffix("; is this an ONNX file?")
        fix = "export it to ONNX, then " if "ONNX" in why and "opset" not in why else ""
        raise JobSubmitError(
            f"the model is refused (every contributor would refuse it): {why}; "
            f"{fix}check it with aimx sandbox run MODEL --input NAME=FILE.npy"
        ) from None
    try:
        sandbox.check_inputs(info, {n: np.asarray(a) for n, a in inputs.items()})
    except sandbox.AdmissionError as exc:
        raise JobSubmitError(
            f"the inputs do not fit the model: {exc}; the model takes {_signature(info)}: "
            "save each --input with that name, dtype and shape"
        ) from None
    return info


def escrow_expiry(
    *, height: int, now_ms: int, deadline_ms: int, block_interval_ms: int, slack_blocks: int
) -> int:
    """The escrow's expiry height: past the deadline, the claim window and the settle
    margin, with some slack for blocks that come late."""
    blocks_to_deadline = math.ceil((deadline_ms - now_ms) / block_interval_ms)
    return height + blocks_to_deadline + CLAIM_WINDOW_BLOCKS + SETTLE_MARGIN_BLOCKS + slack_blocks


def build_spec(
    *,
    requester: bytes,
    nonce: bytes,
    runtime: str,
    model: bytes,
    inputs: Sequence[tuple[str, bytes]],
    max_price: int,
    redundancy: int,
    max_retries: int,
    min_memory_mb: int,
    created_ms: int,
    bid_window_ms: int,
    deadline_ms: int,
    escrow_expiry_height: int,
) -> JobSpec:
    """The JobSpec for a checked request (``inputs``: canonical tensor bytes by name)."""
    probe = Requirements(
        device="cpu",
        execution_provider=EXECUTION_PROVIDER,
        min_memory_mb=min_memory_mb,
        capability_class="onnx.cpu.m1",
    )
    return JobSpec(
        requester=requester,
        nonce=nonce,
        runtime=runtime,
        model_hash=protocol.content_hash(model),
        model_size=len(model),
        inputs=tuple(
            InputRef(name=n, hash=protocol.content_hash(d), size=len(d)) for n, d in inputs
        ),
        requirements=Requirements(
            device="cpu",
            execution_provider=EXECUTION_PROVIDER,
            min_memory_mb=min_memory_mb,
            capability_class=job_class(runtime, probe),
        ),
        graph_opt_level="extended",
        threads=1,
        max_price=max_price,
        redundancy=redundancy,
        max_retries=max_retries,
        verification=VerificationPolicy(
            mode="exact", rtol_e9=1000, atol_e9=1000, spot_check_permille=0
        ),
        created_ms=created_ms,
        bid_window_ms=bid_window_ms,
        deadline_ms=deadline_ms,
        escrow_expiry_height=escrow_expiry_height,
    )
