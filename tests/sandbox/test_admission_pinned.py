"""Admission checks the mutation run (scripts/mutate.py) found unpinned: every limit admits
exactly its value and refuses one more, and each refusal is met on a model that every
other check accepts, so the check under test alone decides."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sandbox import AdmissionError, AdmissionLimits, InputError, check_inputs, check_model

from . import models as M


def _with_initializer(t: onnx.TensorProto) -> bytes:
    """add_one with ``t`` as one more (unused) initializer."""
    model = M.add_one()
    model.graph.initializer.append(t)
    return M.raw(model)


def _nested_ifs(depth: int) -> bytes:
    """A model whose If nodes nest ``depth`` subgraphs deep."""
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["v"], value=numpy_helper.from_array(np.zeros(1)))],
        "leaf",
        [],
        [helper.make_tensor_value_info("v", TensorProto.DOUBLE, [1])],
    )
    for level in range(depth):
        node = helper.make_node("If", ["c"], ["v"], then_branch=graph, else_branch=graph)
        outputs = [helper.make_tensor_value_info("v", TensorProto.DOUBLE, [1])]
        graph = helper.make_graph([node], f"level{level}", [], outputs)
    model = M.make(
        list(graph.node),
        [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("v", TensorProto.DOUBLE, [1])],
    )
    return M.raw(model)


def test_each_model_limit_admits_exactly_its_value() -> None:
    data = M.raw(M.add_one())  # 1 node, an initializer of 4 elements
    check_model(data, AdmissionLimits(max_model_bytes=len(data)))
    check_model(data, AdmissionLimits(max_tensor_elements=4))
    many = M.raw(M.many_nodes(20))  # 21 nodes
    check_model(many, AdmissionLimits(max_nodes=21))
    with pytest.raises(AdmissionError, match="nodes"):
        check_model(many, AdmissionLimits(max_nodes=20))


def test_subgraph_depth_admits_exactly_its_limit() -> None:
    check_model(_nested_ifs(2), AdmissionLimits(max_subgraph_depth=2))
    with pytest.raises(AdmissionError, match="nested deeper"):
        check_model(_nested_ifs(3), AdmissionLimits(max_subgraph_depth=2))


@pytest.mark.parametrize("version", [7, 23])
def test_the_first_and_last_supported_opsets_are_admitted(version: int) -> None:
    limits = AdmissionLimits()
    assert (limits.min_opset, limits.max_opset) == (7, 23)
    assert check_model(M.raw(M.with_opset(version))).opset == version


def test_opset_just_past_the_range_is_refused() -> None:
    for version in (6, 24):
        with pytest.raises(AdmissionError, match="opset"):
            check_model(M.raw(M.with_opset(version)))


def test_constant_of_shape_admits_exactly_the_element_limit() -> None:
    limits = AdmissionLimits(max_tensor_elements=6)
    check_model(M.raw(M.constant_of_shape_constant([2, 3])), limits)
    with pytest.raises(AdmissionError, match="ConstantOfShape"):
        check_model(M.raw(M.constant_of_shape_constant([7])), limits)


def test_constant_of_shape_from_an_input_or_a_non_int64_constant_is_left_to_the_runtime() -> None:
    check_model(M.raw(M.constant_of_shape_from_input()))
    model = M.constant_of_shape_constant([100_000, 100_000, 100])
    model.graph.initializer[0].CopyFrom(
        numpy_helper.from_array(np.array([100_000, 100_000, 100], np.int32), "shape")
    )
    check_model(M.raw(model))  # not an int64 constant: ConstantOfShape refuses it itself


def test_a_tensor_with_a_negative_dimension_is_refused_and_an_empty_one_admitted() -> None:
    empty = helper.make_tensor("empty", TensorProto.FLOAT, [0], [])
    check_model(_with_initializer(empty))
    negative = helper.make_tensor("neg", TensorProto.FLOAT, [2], [1.0, 2.0])
    del negative.dims[:]
    negative.dims.extend([-2, -1])  # the product is 2, which the data matches
    with pytest.raises(AdmissionError, match="negative dimension"):
        check_model(_with_initializer(negative))


def test_typed_data_must_hold_as_many_elements_as_declared() -> None:
    good = helper.make_tensor("f", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    assert not good.HasField("raw_data")
    check_model(_with_initializer(good))
    short = helper.make_tensor("f", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    short.dims[0] = 4
    with pytest.raises(AdmissionError, match="holds 3"):
        check_model(_with_initializer(short))


def _strings(count: int, values: list[bytes]) -> onnx.TensorProto:
    t = onnx.TensorProto(name="s", data_type=TensorProto.STRING, dims=[count])
    t.string_data.extend(values)
    return t


def test_string_data_must_hold_as_many_elements_as_declared() -> None:
    check_model(_with_initializer(_strings(2, [b"a", b"b"])))
    short = _strings(3, [b"a", b"b"])
    with pytest.raises(AdmissionError, match="holds 2"):
        check_model(_with_initializer(short))


def test_external_data_is_refused_by_either_marker_alone() -> None:
    flag_only = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    flag_only.data_location = TensorProto.EXTERNAL
    with pytest.raises(AdmissionError, match="external data"):
        check_model(_with_initializer(flag_only))
    entries_only = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    entry = entries_only.external_data.add()
    entry.key, entry.value = "location", "/etc/passwd"
    with pytest.raises(AdmissionError, match="external data"):
        check_model(_with_initializer(entries_only))


def test_a_model_without_a_graph_is_named_as_such() -> None:
    model = onnx.ModelProto()
    model.ir_version = 8
    model.opset_import.append(helper.make_opsetid("", M.OPSET))
    with pytest.raises(AdmissionError, match="no graph"):
        check_model(model.SerializeToString())


def test_a_model_with_no_standard_opset_is_refused() -> None:
    model = M.add_one()
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    with pytest.raises(AdmissionError, match="no standard ONNX opset"):
        check_model(M.raw(model))


def test_custom_domains_are_refused_in_the_imports_and_in_the_nodes_each() -> None:
    imported_only = M.add_one()
    imported_only.opset_import.append(helper.make_opsetid("com.evil", 1))
    with pytest.raises(AdmissionError, match=r"operator domain 'com\.evil'"):
        check_model(M.raw(imported_only))
    used_only = M.custom_op("com.evil")
    del used_only.opset_import[1:]  # the node's domain is not even imported
    with pytest.raises(AdmissionError, match="custom domain"):
        check_model(M.raw(used_only))


def test_a_graph_input_that_is_not_a_tensor_is_refused() -> None:
    model = M.make(
        [helper.make_node("SequenceLength", ["s"], ["n"])],
        [
            helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None),
        ],
        [helper.make_tensor_value_info("n", TensorProto.INT64, [])],
    )
    with pytest.raises(AdmissionError, match="not a tensor"):
        check_model(M.raw(model))


def test_input_elements_admit_exactly_the_limit() -> None:
    info = check_model(M.raw(M.add_one()))
    ok = np.zeros((3, 4), np.float32)  # 12 elements
    check_inputs(info, {"x": ok}, AdmissionLimits(max_input_elements=12))
    with pytest.raises(InputError, match="elements"):
        check_inputs(info, {"x": ok}, AdmissionLimits(max_input_elements=11))
