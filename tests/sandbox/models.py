"""Builders for the ONNX models the tests use, hostile ones included (onnx.helper)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def make(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto] | None = None,
    *,
    opsets: list[onnx.OperatorSetIdProto] | None = None,
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers or [])
    model = helper.make_model(graph, opset_imports=opsets or [helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


def raw(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString()


def add_one() -> onnx.ModelProto:
    """y = x + 1 for float32 x of shape [N, 4]."""
    return make(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.ones(4, np.float32), "one")],
    )


def external_weight(location: str) -> onnx.ModelProto:
    """add_one with its constant stored as external data at ``location``."""
    model = add_one()
    t = model.graph.initializer[0]
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = t.external_data.add()
        entry.key = key
        entry.value = value
    return model


def external_in_subgraph() -> onnx.ModelProto:
    """An If whose then-branch holds an external-data initializer."""
    inner = external_weight("weights.bin").graph
    then_g = helper.make_graph(
        [helper.make_node("Identity", ["one"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [4])],
        initializer=[inner.initializer[0]],
    )
    else_g = helper.make_graph(
        [
            helper.make_node(
                "Constant", [], ["e"], value=numpy_helper.from_array(np.zeros(4, np.float32))
            )
        ],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [4])],
    )
    return make(
        [helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
        [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )


def external_in_attribute() -> onnx.ModelProto:
    """A Constant node whose tensor attribute points at external data."""
    t = external_weight("/etc/passwd").graph.initializer[0]
    return make(
        [helper.make_node("Constant", [], ["y"], value=t)],
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )


def custom_op(domain: str = "com.evil") -> onnx.ModelProto:
    return make(
        [helper.make_node("Pwn", ["x"], ["y"], domain=domain)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        opsets=[helper.make_opsetid("", OPSET), helper.make_opsetid(domain, 1)],
    )


def constant_of_shape_constant(dims: list[int]) -> onnx.ModelProto:
    return make(
        [helper.make_node("ConstantOfShape", ["shape"], ["y"])],
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array(dims, np.int64), "shape")],
    )


def constant_of_shape_from_input() -> onnx.ModelProto:
    return make(
        [
            helper.make_node("ConstantOfShape", ["shape"], ["big"]),
            helper.make_node("ReduceSum", ["big"], ["y"], keepdims=0),
        ],
        [helper.make_tensor_value_info("shape", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )


def shape_from_values() -> onnx.ModelProto:
    """An output whose shape is the input's values (ConstantOfShape): unknown until run."""
    return make(
        [helper.make_node("ConstantOfShape", ["shape"], ["y"])],
        [helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )


def endless_loop() -> onnx.ModelProto:
    """Loop with a trip count of 2^62 that adds one each iteration."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["v_in", "one"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1]),
        ],
        initializer=[numpy_helper.from_array(np.ones(1, np.float32), "one")],
    )
    return make(
        [helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [
            numpy_helper.from_array(np.array(2**62, np.int64), "trips"),
            numpy_helper.from_array(np.array(True), "cond"),
        ],
    )


def lying_initializer() -> onnx.ModelProto:
    """An initializer that declares 1000 x 1000 floats but holds 16 bytes."""
    model = add_one()
    t = model.graph.initializer[0]
    del t.dims[:]
    t.dims.extend([1000, 1000])
    return model


def with_local_function() -> onnx.ModelProto:
    model = add_one()
    fn = helper.make_function(
        "local",
        "AddOne",
        ["a", "b"],
        ["c"],
        [helper.make_node("Add", ["a", "b"], ["c"])],
        [helper.make_opsetid("", OPSET)],
    )
    model.functions.append(fn)
    return model


def with_metadata(key: str, value: str) -> onnx.ModelProto:
    model = add_one()
    helper.set_model_props(model, {key: value})
    return model


def with_opset(version: int) -> onnx.ModelProto:
    model = add_one()
    model.opset_import[0].version = version
    return model


def many_nodes(n: int) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Identity", ["x" if i == 0 else f"t{i}"], [f"t{i + 1}"]) for i in range(n)
    ]
    nodes.append(helper.make_node("Identity", [f"t{n}"], ["y"]))
    return make(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )


def conv() -> onnx.ModelProto:
    """A small conv net (the layout-sensitive case for determinism)."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((4, 8, 3, 3)).astype(np.float32)
    return make(
        [
            helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 16, 16])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(w2, "w2")],
    )
