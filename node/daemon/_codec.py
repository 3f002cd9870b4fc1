"""Job data as content-addressed bytes (specs/daemon.md, "Content").

- An input tensor's content bytes: ``pack([dtype_code, [dims...], data])`` (canonical
  msgpack; ``data`` is the elements in C order, little-endian); its id is their
  BLAKE2b-256 (``InputRef.hash``).
- A job's output bytes (``Result.output_hash`` covers them): ``pack([[name, dtype_code,
  [dims...], data], ...])`` sorted by the UTF-8 bytes of the names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

import protocol
from sandbox import output_commitment

from ._errors import JobSubmitError

Array = npt.NDArray[Any]

_CODES = ("|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8")
#: Largest tensor the daemon decodes (bytes of data): a tensor's data is one byte string of
#: the canonical encoding, which holds at most ``protocol.MAX_BIN_LEN`` (1 MiB).
MAX_TENSOR_BYTES = protocol.MAX_BIN_LEN


def _code(array: Array) -> str:
    code = np.dtype(array.dtype).newbyteorder("<").str
    if code not in _CODES:
        raise JobSubmitError(f"dtype {array.dtype} is not supported; use one of {_CODES}")
    return code


def _wire(array: Array) -> list[Any]:
    code = _code(array)
    data = np.ascontiguousarray(array, dtype=np.dtype(code)).tobytes(order="C")
    return [code, [int(d) for d in array.shape], data]


def _from_wire(value: Any) -> Array:
    if not isinstance(value, list) or len(value) != 3:
        raise protocol.RemoteProtocolError("a tensor is [dtype, shape, data]")
    code, shape, data = value
    if code not in _CODES or not isinstance(shape, list) or not isinstance(data, bytes):
        raise protocol.RemoteProtocolError("bad tensor dtype, shape or data")
    if len(shape) > 32 or any(type(d) is not int or d < 0 for d in shape):
        raise protocol.RemoteProtocolError("bad tensor shape")
    dtype = np.dtype(code)
    count = 1
    for d in shape:
        count *= d
    if count * dtype.itemsize != len(data) or len(data) > MAX_TENSOR_BYTES:
        raise protocol.RemoteProtocolError("tensor data does not match its shape")
    if code == "|b1" and data.strip(b"\x00\x01"):
        # a boolean is a byte 0 or 1: others passed through a model made the honest
        # provider's run end `crashed` (review round 75, F5)
        raise protocol.RemoteProtocolError("a boolean tensor holds a byte other than 0 or 1")
    try:
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    except (ValueError, OverflowError) as exc:  # a shape numpy cannot hold (dims past 2^63)
        raise protocol.RemoteProtocolError(f"bad tensor shape: {exc}") from None


def tensor_bytes(array: Array) -> bytes:
    """The content bytes of one input tensor."""
    return protocol.pack(_wire(np.asarray(array)))


def tensor_from_bytes(data: bytes) -> Array:
    """Inverse of :func:`tensor_bytes`; :class:`protocol.RemoteProtocolError` if malformed."""
    return _from_wire(protocol.unpack(data, max_bytes=MAX_TENSOR_BYTES + 4096))


def outputs_bytes(outputs: Mapping[str, Array]) -> bytes:
    """The canonical bytes of a job's outputs."""
    names = sorted(outputs, key=lambda n: n.encode("utf-8"))
    return protocol.pack([[name, *_wire(np.asarray(outputs[name]))] for name in names])


def outputs_from_bytes(data: bytes) -> dict[str, Array]:
    """Inverse of :func:`outputs_bytes`; :class:`protocol.RemoteProtocolError` if malformed."""
    value = protocol.unpack(data, max_bytes=64 * MAX_TENSOR_BYTES)
    if not isinstance(value, list) or len(value) > 256:
        raise protocol.RemoteProtocolError("outputs are a list of named tensors")
    out: dict[str, Array] = {}
    for item in value:
        if not isinstance(item, list) or len(item) != 4 or not isinstance(item[0], str):
            raise protocol.RemoteProtocolError("an output is [name, dtype, shape, data]")
        out[item[0]] = _from_wire(item[1:])
    return out


def commitment_of(outputs: Mapping[str, Array]) -> bytes:
    """The sandbox's output commitment (what replicas are compared by)."""
    return output_commitment(outputs)
