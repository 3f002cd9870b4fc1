"""Hostile models through the full job path: refused at admission or stopped by a limit."""

from __future__ import annotations

import re

import numpy as np
import pytest

import sandbox

from . import models as M
from .conftest import worker_processes

LIMITS = sandbox.Limits(wall_ms=60_000, cpu_s=1, memory_mb=1536)


def job(model: bytes, inputs: dict[str, np.ndarray]) -> sandbox.JobRequest:  # type: ignore[type-arg]
    return sandbox.JobRequest("onnx", model, inputs, limits=LIMITS)


X4 = {"x": np.zeros((1, 4), np.float32)}


@pytest.mark.parametrize(
    ("model", "inputs", "reason"),
    [
        (M.external_weight("/etc/passwd"), X4, "external data"),
        (M.external_weight("../secret.bin"), X4, "external data"),
        (M.external_weight("weights.bin"), X4, "external data"),
        (M.custom_op(), {"x": np.zeros(4, np.float32)}, "custom domain|not allowed"),
        (M.constant_of_shape_constant([1 << 20, 1 << 20, 16]), {}, "ConstantOfShape"),
        (M.lying_initializer(), X4, "declares dims"),
        (M.add_one(), {"x": np.zeros((1, 5), np.float32)}, "axis 1"),
    ],
)
def test_rejected_before_running(
    box: sandbox.Sandbox,
    model: object,
    inputs: dict[str, np.ndarray],  # type: ignore[type-arg]
    reason: str,
) -> None:
    before = set(worker_processes())
    outcome = box.run(job(M.raw(model), inputs))  # type: ignore[arg-type]
    assert outcome.kind == "rejected"
    assert re.search(reason, outcome.message)
    assert set(worker_processes()) == before


def test_constant_of_shape_from_input_hits_memory_limit(box: sandbox.Sandbox) -> None:
    shape = np.array([1 << 20, 1 << 20, 16], np.int64)
    outcome = box.run(job(M.raw(M.constant_of_shape_from_input()), {"shape": shape}))
    assert outcome.kind == "memory_limit", outcome.message


def test_enormous_loop_hits_cpu_limit(box: sandbox.Sandbox) -> None:
    outcome = box.run(job(M.raw(M.endless_loop()), {"x": np.zeros(1, np.float32)}))
    assert outcome.kind == "cpu_limit", outcome.message
    assert outcome.usage.cpu_ms >= 1000


def test_output_over_limit(box: sandbox.Sandbox) -> None:
    small = sandbox.Limits(wall_ms=10_000, cpu_s=5, memory_mb=1536, output_bytes=1000)
    outcome = box.run(
        sandbox.JobRequest(
            "onnx", M.raw(M.add_one()), {"x": np.zeros((1000, 4), np.float32)}, limits=small
        )
    )
    assert outcome.kind == "output_limit"


def test_runtime_error_is_reported(box: sandbox.Sandbox) -> None:
    # Reshape to an impossible shape fails inside the runtime, not at admission.
    from onnx import TensorProto, helper, numpy_helper

    model = M.make(
        [helper.make_node("Reshape", ["x", "s"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([7], np.int64), "s")],
    )
    outcome = box.run(job(M.raw(model), X4))
    assert outcome.kind == "runtime_error"
    assert outcome.message


def admit_inside(model: bytes) -> str:
    import sandbox

    try:
        sandbox.check_model(model)
    except sandbox.AdmissionError as exc:
        return f"rejected: {exc}"
    return "accepted"


def test_admission_also_runs_inside_the_locked_down_worker(box: sandbox.Sandbox) -> None:
    from sandbox.testing import run_payload

    hostile = run_payload(box, admit_inside, M.raw(M.external_weight("weights.bin")))
    assert hostile.kind == "ok"
    assert "rejected" in hostile.value and "external data" in hostile.value
    fine = run_payload(box, admit_inside, M.raw(M.add_one()))
    assert fine.value == "'accepted'"
