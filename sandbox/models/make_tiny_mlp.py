"""Write ``tiny_mlp.onnx`` deterministically: ``python -m sandbox.models.make_tiny_mlp``.

A two-layer perceptron, x float32 [N, 16] -> Gemm(16x32) -> Relu -> Gemm(32x4) -> y [N, 4],
with weights from a fixed-seed generator, opset 17, IR version 8.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build(hidden: int = 32, inputs: int = 16, outputs: int = 4, seed: int = 20260101) -> bytes:
    """The model's bytes; the same arguments give the same bytes."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((inputs, hidden)).astype(np.float32) / np.float32(4)
    b1 = rng.standard_normal(hidden).astype(np.float32) / np.float32(10)
    w2 = rng.standard_normal((hidden, outputs)).astype(np.float32) / np.float32(4)
    b2 = rng.standard_normal(outputs).astype(np.float32) / np.float32(10)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2"),
        ],
        "tiny_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", outputs])],
        initializer=[
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(b2, "b2"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="aimx"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString(deterministic=True)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("tiny_mlp.onnx")
    out.write_bytes(build())
    print(out)


if __name__ == "__main__":
    main()
