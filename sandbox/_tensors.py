"""Output tensors: their canonical commitment and the comparison rule (specs/sandbox.md)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from blake3 import blake3

import protocol

from ._dtypes import DTYPE_CODES as DTYPE_CODES
from ._dtypes import dtype_code as dtype_code

COMMITMENT_TAG = "aimx/outputs/2"

Tensors = Mapping[str, npt.NDArray[np.generic]]


def canonical_bytes(array: npt.NDArray[np.generic]) -> bytes:
    """The array's elements in C order, little-endian."""
    code = dtype_code(array.dtype)
    return np.ascontiguousarray(array, dtype=DTYPE_CODES[code]).tobytes(order="C")


def data_hash(array: npt.NDArray[np.generic]) -> bytes:
    """BLAKE3-256 of ``canonical_bytes(array)``, without the copy when the array already is
    C-ordered and little-endian.

    BLAKE3, not the BLAKE2b of every other hash here: this one runs over every output of
    every job, on the path to the result, and is several times faster
    (specs/sandbox.md §7)."""
    code = dtype_code(array.dtype)
    if array.flags.c_contiguous and array.dtype == DTYPE_CODES[code]:
        return raw_data_hash(array.reshape(-1).view(np.uint8).data)
    return raw_data_hash(canonical_bytes(array))


def raw_data_hash(data: bytes | memoryview) -> bytes:
    """:func:`data_hash` of a tensor whose canonical bytes are ``data``."""
    return blake3(data).digest(protocol.HASH_SIZE)


def output_commitment(outputs: Tensors) -> bytes:
    """BLAKE2b-256 commitment over the outputs: names sorted, dtype, shape, data hash each.

    ``content_hash(pack([TAG, [[name, dtype_code, [dims...], data_hash(data)], ...]]))``
    with the entries sorted by the UTF-8 bytes of their names.
    """
    return commitment_of(
        (name, dtype_code(array.dtype), array.shape, data_hash(array))
        for name, array in outputs.items()
    )


def commitment_of(hashed: Iterable[tuple[str, str, Sequence[int], bytes]]) -> bytes:
    """:func:`output_commitment` from each output's name, dtype code, dims and data hash
    (names distinct). Sorting by name sorts by its UTF-8 bytes: UTF-8 keeps code point
    order."""
    entries = sorted([name, code, [int(d) for d in dims], h] for name, code, dims, h in hashed)
    return protocol.content_hash(protocol.pack([COMMITMENT_TAG, entries]))


@dataclass(frozen=True, slots=True)
class Comparison:
    """Whether two results agree, how they were compared, and why not when they do not."""

    agree: bool
    method: str  # "exact" or "tolerance"
    reason: str = ""


def compare_outputs(
    a: Tensors,
    b: Tensors,
    *,
    class_a: str,
    class_b: str,
    policy: protocol.VerificationPolicy,
) -> Comparison:
    """Compare two runs' outputs under a job's verification policy.

    Within one determinism class and policy mode ``exact``: bit for bit (equal commitments).
    Otherwise element-wise: names, dtypes and shapes equal; integers and booleans equal;
    floats satisfy ``|a - b| <= atol + rtol * |b|`` with NaN only where the other has NaN and
    infinities equal, tolerances being ``policy.rtol_e9 / 1e9`` and ``policy.atol_e9 / 1e9``.
    """
    if class_a == class_b and policy.mode == "exact":
        same = output_commitment(a) == output_commitment(b)
        return Comparison(same, "exact", "" if same else "outputs differ bit for bit")
    if sorted(a) != sorted(b):
        return Comparison(False, "tolerance", "output names differ")
    rtol = policy.rtol_e9 / 1e9
    atol = policy.atol_e9 / 1e9
    for name in sorted(a):
        x, y = a[name], b[name]
        if dtype_code(x.dtype) != dtype_code(y.dtype):
            return Comparison(False, "tolerance", f"{name}: dtype {x.dtype} != {y.dtype}")
        if x.shape != y.shape:
            return Comparison(False, "tolerance", f"{name}: shape {x.shape} != {y.shape}")
        if np.issubdtype(x.dtype, np.floating):
            xf = x.astype(np.float64)
            yf = y.astype(np.float64)
            nan_x, nan_y = np.isnan(xf), np.isnan(yf)
            if not np.array_equal(nan_x, nan_y):
                return Comparison(False, "tolerance", f"{name}: NaN in different places")
            finite = ~nan_x
            inf = np.isinf(xf) | np.isinf(yf)
            if not np.array_equal(xf[inf & finite], yf[inf & finite]):
                return Comparison(False, "tolerance", f"{name}: infinities differ")
            ok = finite & ~inf
            diff = np.abs(xf[ok] - yf[ok])
            bound = atol + rtol * np.abs(yf[ok])
            if diff.size and bool(np.any(diff > bound)):
                worst = float(np.max(diff - bound))
                return Comparison(
                    False, "tolerance", f"{name}: differs beyond tolerance (by {worst:.3g})"
                )
        elif not np.array_equal(x, y):
            return Comparison(False, "tolerance", f"{name}: values differ")
    return Comparison(True, "tolerance")
