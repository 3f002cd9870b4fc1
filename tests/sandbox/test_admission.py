"""Admission: hostile and malformed models are refused with a reason; inputs are checked."""

from __future__ import annotations

import numpy as np
import pytest

import sandbox
from sandbox import AdmissionError, AdmissionLimits, InputError, check_inputs, check_model

from . import models as M


def test_tiny_model_is_accepted() -> None:
    info = check_model(sandbox.tiny_model_path().read_bytes())
    assert [(i.name, i.dtype, i.shape) for i in info.inputs] == [("x", "<f4", (None, 16))]
    assert [o.name for o in info.outputs] == ["y"]
    assert sandbox.tiny_model_path().stat().st_size < 100_000


def test_tiny_model_is_reproducible() -> None:
    from sandbox.models.make_tiny_mlp import build

    assert build() == sandbox.tiny_model_path().read_bytes()


@pytest.mark.parametrize(
    "location",
    ["/etc/passwd", "../../../etc/passwd", "weights.bin", "sub/../weights.bin", "link.bin"],
)
def test_external_data_is_refused(location: str) -> None:
    with pytest.raises(AdmissionError, match="external data"):
        check_model(M.raw(M.external_weight(location)))


def test_external_data_through_symlink_is_refused(tmp_path: pytest.TempPathFactory) -> None:
    import os
    from pathlib import Path

    d = Path(str(tmp_path))
    os.symlink("/etc/passwd", d / "link.bin")
    model = d / "model.onnx"
    model.write_bytes(M.raw(M.external_weight("link.bin")))
    with pytest.raises(AdmissionError, match="external data"):
        check_model(model.read_bytes())


def test_external_data_in_subgraph_is_refused() -> None:
    with pytest.raises(AdmissionError, match=r"external data") as err:
        check_model(M.raw(M.external_in_subgraph()))
    assert "then_branch" in str(err.value)


def test_external_data_in_attribute_is_refused() -> None:
    with pytest.raises(AdmissionError, match="external data"):
        check_model(M.raw(M.external_in_attribute()))


@pytest.mark.parametrize("domain", ["com.evil", "com.microsoft"])
def test_custom_op_domain_is_refused(domain: str) -> None:
    with pytest.raises(AdmissionError, match="domain"):
        check_model(M.raw(M.custom_op(domain)))


def test_huge_constant_of_shape_constant_is_refused() -> None:
    with pytest.raises(AdmissionError, match="ConstantOfShape"):
        check_model(M.raw(M.constant_of_shape_constant([100_000, 100_000, 100])))
    check_model(M.raw(M.constant_of_shape_constant([10, 10])))


def test_lying_initializer_is_refused() -> None:
    with pytest.raises(AdmissionError, match="declares dims"):
        check_model(M.raw(M.lying_initializer()))


def test_local_functions_are_refused() -> None:
    with pytest.raises(AdmissionError, match="local functions"):
        check_model(M.raw(M.with_local_function()))


@pytest.mark.parametrize("key", ["ort_config", "onnxruntime.session", "ORT_CONFIG"])
def test_runtime_config_metadata_is_refused(key: str) -> None:
    with pytest.raises(AdmissionError, match="configures the runtime"):
        check_model(M.raw(M.with_metadata(key, '{"session_options": {}}')))
    check_model(M.raw(M.with_metadata("author", "me")))


@pytest.mark.parametrize("version", [1, 6, 99])
def test_opset_outside_range_is_refused(version: int) -> None:
    with pytest.raises(AdmissionError, match="opset"):
        check_model(M.raw(M.with_opset(version)))


def test_size_node_and_element_limits() -> None:
    data = M.raw(M.add_one())
    with pytest.raises(AdmissionError, match="bytes"):
        check_model(data, AdmissionLimits(max_model_bytes=len(data) - 1))
    with pytest.raises(AdmissionError, match="nodes"):
        check_model(M.raw(M.many_nodes(20)), AdmissionLimits(max_nodes=10))
    with pytest.raises(AdmissionError, match="elements"):
        check_model(data, AdmissionLimits(max_tensor_elements=3))


@pytest.mark.parametrize("junk", [b"", b"\x00" * 10, b"not a model at all", b"\xff" * 64])
def test_garbage_is_refused(junk: bytes) -> None:
    with pytest.raises(AdmissionError):
        check_model(junk)


def test_inputs_are_checked_against_the_graph() -> None:
    info = check_model(M.raw(M.add_one()))
    ok = np.zeros((3, 4), np.float32)
    check_inputs(info, {"x": ok})
    cases = [
        ({}, "missing inputs"),
        ({"x": ok, "z": ok}, "unknown inputs"),
        ({"x": ok.astype(np.float64)}, "dtype"),
        ({"x": np.zeros((3, 4, 1), np.float32)}, "rank"),
        ({"x": np.zeros((3, 5), np.float32)}, "axis 1"),
        ({"x": np.zeros((3, 4), np.complex64)}, "not supported"),
    ]
    for inputs, message in cases:
        with pytest.raises(InputError, match=message):
            check_inputs(info, inputs)
    with pytest.raises(InputError, match="elements"):
        check_inputs(info, {"x": ok}, AdmissionLimits(max_input_elements=11))
