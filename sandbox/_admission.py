"""Admission: the checks a model and its inputs pass before any runtime sees them.

The model is parsed with the ``onnx`` package from bytes, which never loads external data;
everything that could make a runtime read a file, call a custom kernel or allocate without
bound is refused here with a reason. The same checks run again inside the worker.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import onnx
from google.protobuf.message import DecodeError

from ._dtypes import DTYPE_CODES, dtype_code
from ._errors import AdmissionError, InputError

# Model metadata keys that ask a runtime to configure itself from the model.
_RUNTIME_CONFIG_KEYS = ("ort_config", "onnxruntime", "ort.", "session.")


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """What a model may contain. The defaults suit a contributor's home machine."""

    max_model_bytes: int = 512 * 1024 * 1024
    max_nodes: int = 100_000
    max_tensor_elements: int = 256 * 1024 * 1024
    max_input_elements: int = 64 * 1024 * 1024
    max_subgraph_depth: int = 16
    min_opset: int = 7
    max_opset: int = 23
    allowed_domains: tuple[str, ...] = ("", "ai.onnx", "ai.onnx.ml")


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """A graph input or output: name, dtype code (``<f4``), dims (``None`` when symbolic)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What admission learned about an accepted model."""

    opset: int
    node_count: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    domains: tuple[str, ...] = field(default=())


def _tensor_info(value: onnx.ValueInfoProto) -> TensorInfo:
    ttype = value.type.tensor_type if value.type.HasField("tensor_type") else None
    if ttype is None:
        raise AdmissionError(f"graph value {value.name!r} is not a tensor; only tensors allowed")
    try:
        code = dtype_code(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type)))
    except (KeyError, ValueError, TypeError):
        raise AdmissionError(
            f"graph value {value.name!r} has element type {ttype.elem_type}, which jobs may not "
            f"use (allowed numpy types: {', '.join(DTYPE_CODES)})"
        ) from None
    shape: tuple[int | None, ...] | None = None
    if ttype.HasField("shape"):
        shape = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in ttype.shape.dim
        )
    return TensorInfo(value.name, code, shape)


def _check_tensor(t: onnx.TensorProto, where: str, limits: AdmissionLimits) -> None:
    if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data) > 0:
        raise AdmissionError(
            f"{where}: tensor {t.name!r} uses external data; embed all weights in the model file"
        )
    count = 1
    for d in t.dims:
        if d < 0:
            raise AdmissionError(f"{where}: tensor {t.name!r} has a negative dimension")
        count *= d
    if count > limits.max_tensor_elements:
        raise AdmissionError(
            f"{where}: tensor {t.name!r} has {count} elements, more than the limit of "
            f"{limits.max_tensor_elements}"
        )
    if t.data_type == onnx.TensorProto.STRING:
        stored = len(t.string_data)
        if stored != count:
            raise AdmissionError(
                f"{where}: tensor {t.name!r} declares {count} elements but holds {stored}"
            )
        return
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    except (KeyError, ValueError, TypeError):
        raise AdmissionError(
            f"{where}: tensor {t.name!r} has unsupported element type {t.data_type}"
        ) from None
    if t.HasField("raw_data"):
        if len(t.raw_data) != count * itemsize:
            raise AdmissionError(
                f"{where}: tensor {t.name!r} declares dims {list(t.dims)} ({count * itemsize} "
                f"bytes) but holds {len(t.raw_data)} bytes; the model is corrupt or hostile"
            )
        return
    stored = (
        len(t.float_data)
        + len(t.int32_data)
        + len(t.int64_data)
        + len(t.double_data)
        + len(t.uint64_data)
    )
    if t.data_type in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128):
        stored //= 2
    if stored != count:
        raise AdmissionError(
            f"{where}: tensor {t.name!r} declares dims {list(t.dims)} ({count} elements) but "
            f"holds {stored}; the model is corrupt or hostile"
        )


def _graphs(
    graph: onnx.GraphProto, where: str, depth: int, limits: AdmissionLimits
) -> Iterator[tuple[onnx.GraphProto, str]]:
    if depth > limits.max_subgraph_depth:
        raise AdmissionError(f"{where}: subgraphs nested deeper than {limits.max_subgraph_depth}")
    yield graph, where
    for node in graph.node:
        for attr in node.attribute:
            subs = list(attr.graphs)
            if attr.HasField("g"):
                subs.insert(0, attr.g)
            for i, sub in enumerate(subs):
                yield from _graphs(
                    sub,
                    f"{where}/{node.op_type}:{node.name or '?'}.{attr.name}[{i}]",
                    depth + 1,
                    limits,
                )


def _int_constant(name: str, consts: Mapping[str, onnx.TensorProto]) -> list[int] | None:
    t = consts.get(name)
    if t is None or t.data_type != onnx.TensorProto.INT64:
        return None
    try:
        return [int(v) for v in onnx.numpy_helper.to_array(t).reshape(-1)]
    except Exception:
        return None


#: Standard operators whose output is random: two runs of one job differ, so no output of
#: theirs can be verified by comparison, and a provider running one replica twice signs two
#: Results that contradict each other (review round 71, N1).
RANDOM_OPS = frozenset(
    {
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
    }
)


def _check_deterministic(
    node: onnx.NodeProto, consts: Mapping[str, onnx.TensorProto], where: str
) -> None:
    """Refuse a node whose output is random: a random operator, or a ``Dropout`` whose
    ``training_mode`` input is not a constant false (in training mode it drops at random)."""
    name = node.name or node.op_type
    if node.op_type in RANDOM_OPS:
        raise AdmissionError(
            f"{where}: node {name!r} uses {node.op_type}, whose output is random: runs of the "
            "job would differ and none could be verified; pass random values as an input"
        )
    if node.op_type == "Dropout" and len(node.input) >= 3 and node.input[2]:
        mode = consts.get(node.input[2])
        try:
            training = mode is None or bool(onnx.numpy_helper.to_array(mode).any())
        except Exception:
            training = True
        if training:
            raise AdmissionError(
                f"{where}: Dropout node {name!r} may run in training mode (random); remove "
                "its training_mode input or make it a constant false"
            )


def check_model(data: bytes, limits: AdmissionLimits | None = None) -> ModelInfo:
    """Parse and check an ONNX model given as bytes; :class:`AdmissionError` when refused."""
    limits = limits or AdmissionLimits()
    if len(data) > limits.max_model_bytes:
        raise AdmissionError(
            f"model is {len(data)} bytes, more than the limit of {limits.max_model_bytes}"
        )
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise AdmissionError(f"model is not a valid ONNX protobuf: {exc}") from None
    if not model.HasField("graph"):
        raise AdmissionError("model has no graph; is this an ONNX file?")
    if len(model.functions) > 0:
        raise AdmissionError(
            "model defines local functions; inline them (onnx.inliner.inline_local_functions)"
        )
    for prop in model.metadata_props:
        key = prop.key.lower()
        if any(key.startswith(k) for k in _RUNTIME_CONFIG_KEYS):
            raise AdmissionError(
                f"model metadata {prop.key!r} configures the runtime; remove it "
                "(the job spec, not the model, sets runtime options)"
            )
    opset: int | None = None
    domains = []
    for imp in model.opset_import:
        if imp.domain not in limits.allowed_domains:
            raise AdmissionError(
                f"operator domain {imp.domain!r} is not allowed (allowed: standard ONNX "
                f"{', '.join(repr(d) for d in limits.allowed_domains)})"
            )
        domains.append(imp.domain)
        if imp.domain in ("", "ai.onnx"):
            opset = imp.version
    if opset is None:
        raise AdmissionError("model imports no standard ONNX opset")
    if not limits.min_opset <= opset <= limits.max_opset:
        raise AdmissionError(
            f"model uses opset {opset}; supported are {limits.min_opset} to {limits.max_opset} "
            "(convert with onnx.version_converter)"
        )
    nodes = 0
    for graph, where in _graphs(model.graph, "graph", 0, limits):
        consts: dict[str, onnx.TensorProto] = {}
        for t in graph.initializer:
            _check_tensor(t, f"{where} initializer", limits)
            consts[t.name] = t
        for st in graph.sparse_initializer:
            _check_tensor(st.values, f"{where} sparse initializer", limits)
            _check_tensor(st.indices, f"{where} sparse initializer", limits)
        for node in graph.node:
            nodes += 1
            if nodes > limits.max_nodes:
                raise AdmissionError(f"model has more than {limits.max_nodes} nodes")
            if node.domain not in limits.allowed_domains:
                raise AdmissionError(
                    f"{where}: node {node.name or node.op_type!r} uses operator "
                    f"{node.domain}.{node.op_type}, a custom domain; only standard ONNX "
                    "operators are allowed"
                )
            _check_deterministic(node, consts, where)
            for attr in node.attribute:
                tensors = list(attr.tensors)
                if attr.HasField("t"):
                    tensors.insert(0, attr.t)
                for t in tensors:
                    _check_tensor(
                        t, f"{where} node {node.name or node.op_type} .{attr.name}", limits
                    )
                sparse = list(attr.sparse_tensors)
                if attr.HasField("sparse_tensor"):
                    sparse.insert(0, attr.sparse_tensor)
                for st in sparse:
                    _check_tensor(st.values, f"{where} node {node.op_type}", limits)
                    _check_tensor(st.indices, f"{where} node {node.op_type}", limits)
                if node.op_type == "Constant" and attr.name == "value" and attr.HasField("t"):
                    for out in node.output[:1]:
                        consts[out] = attr.t
            if node.op_type == "ConstantOfShape" and node.input:
                dims = _int_constant(node.input[0], consts)
                if dims is not None:
                    count = 1
                    for d in dims:
                        count *= max(d, 0)
                    if count > limits.max_tensor_elements:
                        raise AdmissionError(
                            f"{where}: ConstantOfShape {node.name or '?'!r} would create "
                            f"{count} elements, more than the limit of "
                            f"{limits.max_tensor_elements}"
                        )
    init_names = {t.name for t in model.graph.initializer}
    inputs = tuple(_tensor_info(v) for v in model.graph.input if v.name not in init_names)
    outputs = tuple(_tensor_info(v) for v in model.graph.output)
    return ModelInfo(opset, nodes, inputs, outputs, tuple(domains))


def check_inputs(
    info: ModelInfo,
    inputs: Mapping[str, npt.NDArray[np.generic]],
    limits: AdmissionLimits | None = None,
) -> None:
    """Check inputs against the graph: names, dtypes, ranks, dims, element counts."""
    limits = limits or AdmissionLimits()
    expected = {i.name: i for i in info.inputs}
    missing = sorted(set(expected) - set(inputs))
    extra = sorted(set(inputs) - set(expected))
    if missing:
        raise InputError(f"missing inputs {missing}; the model needs {sorted(expected)}")
    if extra:
        raise InputError(f"unknown inputs {extra}; the model takes {sorted(expected)}")
    total = 0
    for name, spec in expected.items():
        array = inputs[name]
        try:
            code = dtype_code(array.dtype)
        except ValueError as exc:
            raise InputError(f"input {name!r}: {exc}") from None
        if code != spec.dtype:
            raise InputError(f"input {name!r} has dtype {code}; the model wants {spec.dtype}")
        if spec.shape is not None:
            if array.ndim != len(spec.shape):
                raise InputError(
                    f"input {name!r} has rank {array.ndim}; the model wants {len(spec.shape)} "
                    f"(shape {['?' if d is None else d for d in spec.shape]})"
                )
            for axis, (got, want) in enumerate(zip(array.shape, spec.shape, strict=True)):
                if want is not None and got != want:
                    raise InputError(
                        f"input {name!r} has size {got} on axis {axis}; the model wants {want}"
                    )
        if array.dtype == np.bool_ and array.size and int(array.view(np.uint8).max()) > 1:
            # a boolean is a byte 0 or 1; others passed through made the run end
            # `crashed` (review round 75, F5)
            raise InputError(f"input {name!r} is boolean but holds a byte other than 0 or 1")
        total += int(array.size)
        if total > limits.max_input_elements:
            raise InputError(f"inputs hold more than {limits.max_input_elements} elements in total")
