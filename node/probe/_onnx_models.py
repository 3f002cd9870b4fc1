"""The probe's two ONNX models, written as protobuf bytes directly.

The probe must run where the ``onnx`` package is absent (only onnxruntime and numpy are
assumed), so the few protobuf fields needed are encoded here. Both models are fixed: the
same bytes on every machine (a test checks them against ``onnx.helper``). specs/probe.md
gives the exact construction.

- ``tiny_model()``: ``Y = Relu(X @ W)``, X float32 [1, 4], W fixed [4, 4]: used to check
  that an execution provider really runs (and does not silently fall back to the CPU).
- ``workload_model()``: the benchmark, a chain of MatMul + Relu layers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

IR_VERSION = 7
OPSET = 13
_FLOAT = 1  # TensorProto.FLOAT
_VARINT, _LEN = 0, 2

WORKLOAD_NAME = "matmul-relu/1"
WORKLOAD_BATCH = 256
WORKLOAD_WIDTH = 512
WORKLOAD_LAYERS = 4


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _int(field: int, n: int) -> bytes:
    return _varint(field << 3 | _VARINT) + _varint(n)


def _len(field: int, data: bytes) -> bytes:
    return _varint(field << 3 | _LEN) + _varint(len(data)) + data


def _str(field: int, text: str) -> bytes:
    return _len(field, text.encode("utf-8"))


def _tensor(name: str, array: npt.NDArray[np.float32]) -> bytes:
    dims = b"".join(_int(1, d) for d in array.shape)
    raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
    return dims + _int(2, _FLOAT) + _str(8, name) + _len(9, raw)


def _value_info(name: str, shape: tuple[int, ...]) -> bytes:
    dims = b"".join(_len(1, _int(1, d)) for d in shape)
    tensor_type = _int(1, _FLOAT) + _len(2, dims)
    return _str(1, name) + _len(2, _len(1, tensor_type))


def _node(op: str, inputs: list[str], outputs: list[str], name: str) -> bytes:
    return (
        b"".join(_str(1, i) for i in inputs)
        + b"".join(_str(2, o) for o in outputs)
        + _str(3, name)
        + _str(4, op)
    )


def _model(
    graph_name: str,
    nodes: list[bytes],
    initializers: list[bytes],
    inputs: list[bytes],
    outputs: list[bytes],
) -> bytes:
    graph = (
        b"".join(_len(1, n) for n in nodes)
        + _str(2, graph_name)
        + b"".join(_len(5, t) for t in initializers)
        + b"".join(_len(11, v) for v in inputs)
        + b"".join(_len(12, v) for v in outputs)
    )
    opset = _str(1, "") + _int(2, OPSET)
    return _int(1, IR_VERSION) + _str(2, "aimx-probe") + _len(7, graph) + _len(8, opset)


def fixed_values(count: int, stream: int, scale: float) -> npt.NDArray[np.float32]:
    """``count`` float32 values uniform in [-scale, scale), the same on every machine.

    Value i of stream s: z = splitmix64(s * 2**32 + i); u = (z >> 40) / 2**24;
    float32((2u - 1) * scale), computed in float64.
    """
    with np.errstate(over="ignore"):
        z = np.arange(count, dtype=np.uint64) + np.uint64(stream << 32)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)
    return ((2.0 * u - 1.0) * scale).astype(np.float32)


TINY_WEIGHTS = np.array(
    [[1, -2, 3, 0.5], [0, 1, -1, 2], [2, 0.25, 0, -1], [-1, 1, 1, 1]], dtype=np.float32
)
TINY_INPUT = np.array([[1, 2, 3, 4]], dtype=np.float32)
TINY_WEIGHTS.setflags(write=False)
TINY_INPUT.setflags(write=False)


def tiny_expected() -> npt.NDArray[np.float32]:
    """The tiny model's output for :data:`TINY_INPUT` (exact in float32)."""
    expected: npt.NDArray[np.float32] = np.maximum(TINY_INPUT @ TINY_WEIGHTS, 0).astype(np.float32)
    return expected


@cache
def tiny_model() -> bytes:
    """``Y = Relu(X @ W)`` with X [1, 4] and the fixed W."""
    return _model(
        "aimx-probe-tiny",
        [_node("MatMul", ["X", "W"], ["XW"], "matmul"), _node("Relu", ["XW"], ["Y"], "relu")],
        [_tensor("W", TINY_WEIGHTS)],
        [_value_info("X", (1, 4))],
        [_value_info("Y", (1, 4))],
    )


@dataclass(frozen=True, slots=True)
class Workload:
    """The benchmark model, its input, and how much work one run is."""

    name: str
    model: bytes
    input_name: str
    input: npt.NDArray[np.float32]
    flops: int

    @property
    def model_hash(self) -> str:
        return hashlib.blake2b(self.model, digest_size=32).hexdigest()


@cache
def workload() -> Workload:
    """X [256, 512] through 4 layers of ``Relu(X @ W_k)``, W_k [512, 512] (He-scaled)."""
    n, width, layers = WORKLOAD_BATCH, WORKLOAD_WIDTH, WORKLOAD_LAYERS
    scale = float(np.sqrt(6.0 / width))  # keeps activations from vanishing or blowing up
    nodes, weights = [], []
    current = "X"
    for k in range(layers):
        w = fixed_values(width * width, k + 1, scale).reshape(width, width)
        weights.append(_tensor(f"W{k}", w))
        out = "Y" if k == layers - 1 else f"H{k}"
        nodes.append(_node("MatMul", [current, f"W{k}"], [f"M{k}"], f"matmul{k}"))
        nodes.append(_node("Relu", [f"M{k}"], [out], f"relu{k}"))
        current = out
    model = _model(
        "aimx-probe-workload",
        nodes,
        weights,
        [_value_info("X", (n, width))],
        [_value_info("Y", (n, width))],
    )
    x = fixed_values(n * width, 0, 1.0).reshape(n, width)
    x.setflags(write=False)  # shared by every caller of this cached function
    return Workload(WORKLOAD_NAME, model, "X", x, 2 * n * width * width * layers)
