"""The output commitment and the comparison rule."""

from __future__ import annotations

import numpy as np
import pytest
from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import protocol
from sandbox import compare_outputs, output_commitment

EXACT = protocol.VerificationPolicy(mode="exact", rtol_e9=0, atol_e9=0, spot_check_permille=0)
LOOSE = protocol.VerificationPolicy(
    mode="tolerance", rtol_e9=1_000_000, atol_e9=1_000, spot_check_permille=0
)
A = "ort-1.32.0/cpu/avx512/extended"
B = "ort-1.32.0/cpu/avx2/extended"

arrays = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=5),
)


def test_commitment_is_specified() -> None:
    # The definition in specs/sandbox.md, written out, and its test vector there.
    y = np.arange(6, dtype=np.float32).reshape(2, 3)
    z = np.array([1, 2], dtype=np.int64)
    entries = [
        ["y", "<f4", [2, 3], blake3(y.tobytes()).digest()],
        ["z", "<i8", [2], blake3(z.tobytes()).digest()],
    ]
    expected = protocol.content_hash(protocol.pack(["aimx/outputs/2", entries]))
    assert output_commitment({"z": z, "y": y}) == expected
    assert expected.hex() == VECTOR


VECTOR = "c451360c44624b10f4ee5d1b344310f88055cfd94fa0874a88d383f6ab6595fb"


@settings(max_examples=60, deadline=None)
@given(a=arrays, b=arrays)
def test_commitment_ignores_order_and_layout(
    a: np.ndarray,  # type: ignore[type-arg]
    b: np.ndarray,  # type: ignore[type-arg]
) -> None:
    first = output_commitment({"a": a, "b": b})
    assert first == output_commitment({"b": b, "a": a})
    assert first == output_commitment(
        {"a": np.asfortranarray(a) if a.ndim >= 2 else a, "b": b.astype(b.dtype.newbyteorder(">"))}
    )


@settings(max_examples=60, deadline=None)
@given(a=arrays)
def test_commitment_binds_dtype_shape_and_bytes(a: np.ndarray) -> None:  # type: ignore[type-arg]
    base = output_commitment({"a": a})
    assert base != output_commitment({"b": a})
    assert base != output_commitment({"a": a.reshape((*a.shape, 1))})
    if a.dtype != np.bool_:
        with np.errstate(over="ignore", invalid="ignore"):
            other = a.astype(np.float32 if a.dtype != np.float32 else np.float64)
        assert base != output_commitment({"a": other})
    if a.size:
        changed = a.copy()
        flat = changed.reshape(-1)
        with np.errstate(over="ignore"):
            flat[0] = not flat[0] if a.dtype == np.bool_ else flat[0] + 1
        if changed.tobytes() != a.tobytes():
            assert base != output_commitment({"a": changed})


def test_same_class_compares_bit_for_bit() -> None:
    x = {"y": np.array([1.0, 2.0], np.float32)}
    y = {"y": np.nextafter(x["y"], np.float32(3))}
    assert compare_outputs(x, x, class_a=A, class_b=A, policy=EXACT).agree
    result = compare_outputs(x, y, class_a=A, class_b=A, policy=EXACT)
    assert not result.agree and result.method == "exact"


def test_other_class_compares_within_tolerance() -> None:
    x = {"y": np.array([1.0, 2.0, np.nan, np.inf], np.float32)}
    near = {"y": np.array([1.0000005, 2.000001, np.nan, np.inf], np.float32)}
    far = {"y": np.array([1.1, 2.0, np.nan, np.inf], np.float32)}
    assert compare_outputs(x, near, class_a=A, class_b=B, policy=LOOSE).agree
    result = compare_outputs(x, far, class_a=A, class_b=B, policy=LOOSE)
    assert not result.agree and result.method == "tolerance" and "beyond" in result.reason
    nan_moved = {"y": np.array([np.nan, 2.0, 1.0, np.inf], np.float32)}
    assert not compare_outputs(x, nan_moved, class_a=A, class_b=B, policy=LOOSE).agree
    neg_inf = {"y": np.array([1.0, 2.0, np.nan, -np.inf], np.float32)}
    assert not compare_outputs(x, neg_inf, class_a=A, class_b=B, policy=LOOSE).agree


@pytest.mark.parametrize(
    ("other", "reason"),
    [
        ({"z": np.zeros(2, np.float32)}, "names"),
        ({"y": np.zeros(2, np.float64)}, "dtype"),
        ({"y": np.zeros((1, 2), np.float32)}, "shape"),
    ],
)
def test_structure_must_match(other: dict[str, np.ndarray], reason: str) -> None:  # type: ignore[type-arg]
    x = {"y": np.zeros(2, np.float32)}
    result = compare_outputs(x, other, class_a=A, class_b=B, policy=LOOSE)
    assert not result.agree and reason in result.reason


def test_integers_compare_exactly_across_classes() -> None:
    x = {"k": np.array([1, 2], np.int64)}
    assert not compare_outputs(
        x, {"k": np.array([1, 3], np.int64)}, class_a=A, class_b=B, policy=LOOSE
    ).agree
