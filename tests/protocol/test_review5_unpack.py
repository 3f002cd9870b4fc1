"""Review round 5, R5-2: the general decoder against trees of nested arrays.

Each decoded array is a Python list, and one byte of input can open one: a megabyte of
nested two-item arrays built half a million lists (~0.4 s, +40 MiB) before any caller
looked at the value's shape, and a 256 KiB one on a gossip topic reached every node. Now
``unpack`` stops at the first array past ``ARRAY_ALLOWANCE + len(data) // BYTES_PER_ARRAY``,
which no value of the protocol comes near.
"""

from __future__ import annotations

import msgpack
import pytest

import protocol
from protocol._canonical import ARRAY_ALLOWANCE, BYTES_PER_ARRAY


def _tree(nbytes: int) -> bytes:
    """The largest binary tree of two-item msgpack arrays (leaves 0) of at most ``nbytes``."""
    depth = 0
    while (1 << (depth + 2)) - 1 <= nbytes:
        depth += 1
    node = b"\x00"
    for _ in range(depth):
        node = b"\x92" + node + node
    return node


def _flat(item: bytes, nbytes: int) -> bytes:
    """Arrays of 4096 ``item``s in an array: ``item`` repeated to about ``nbytes``."""
    inner = b"\xdc\x10\x00" + item * 4096
    count = min(nbytes // len(inner), 4096)
    return b"\xdc" + count.to_bytes(2, "big") + inner * count


@pytest.mark.parametrize("size", [64 << 10, 256 << 10, 1 << 20])
def test_a_tree_of_nested_arrays_is_refused_once_past_its_array_budget(size: int) -> None:
    with pytest.raises(protocol.RemoteProtocolError, match="arrays in"):
        protocol.unpack(_tree(size), max_bytes=1 << 20)


@pytest.mark.parametrize("item", [b"\x90", b"\x91\x00", b"\x93\x00\x00\x00"])
def test_flat_runs_of_small_arrays_are_refused_too(item: bytes) -> None:
    with pytest.raises(protocol.RemoteProtocolError, match="arrays in"):
        protocol.unpack(_flat(item, 1 << 20), check_types=False)


def test_values_as_dense_as_the_protocol_makes_them_decode() -> None:
    # A job's outputs at their densest: 256 scalar tensors, two arrays each.
    outputs = [[f"y{i}", "|b1", [], b"\x01"] for i in range(256)]
    assert protocol.unpack(protocol.pack(outputs)) == outputs
    # Long lists whose arrays carry a key: a genesis's allocations, dropped notices.
    allocations = [[bytes([i % 256]) * 32, i] for i in range(4096)]
    assert protocol.unpack(protocol.pack(allocations)) == allocations
    # Flat arrays of scalars hold one array per 4,096 items: no bound bites.
    flat = [[0] * 4096 for _ in range(64)]
    assert protocol.unpack(protocol.pack(flat)) == flat


def _padded(value: list[object], size: int) -> bytes:
    """``[value, padding]`` encoded in exactly ``size`` bytes."""
    pad = size - len(protocol.pack([value, b""]))
    while len(data := protocol.pack([value, b"\x00" * pad])) > size:
        pad -= 1
    assert len(data) == size
    return data


def test_the_array_budget_is_exact_and_can_be_set() -> None:
    size = 2 * ARRAY_ALLOWANCE * BYTES_PER_ARRAY
    budget = ARRAY_ALLOWANCE + size // BYTES_PER_ARRAY
    # [[[], [], ...], padding]: exactly the budget's arrays, then one more
    at_budget: list[object] = [[] for _ in range(budget - 2)]
    assert protocol.unpack(_padded(at_budget, size))[0] == at_budget
    with pytest.raises(protocol.RemoteProtocolError, match=f"more than {budget} arrays"):
        protocol.unpack(_padded([*at_budget, []], size))
    # a caller that knows its shape may ask for less (or more)
    with pytest.raises(protocol.RemoteProtocolError, match="more than 2 arrays"):
        protocol.unpack(protocol.pack([[1], [2]]), max_arrays=2)
    assert protocol.unpack(protocol.pack([[1], [2]]), max_arrays=3) == [[1], [2]]
    big = protocol.pack([[] for _ in range(4000)])
    assert len(protocol.unpack(big, max_arrays=4001)) == 4000


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ([0] * 4095 + [1.5], "float"),
        ([[0] * 4096, [b"x", [None]]], "NoneType"),
        ([[[["a", True]]]], "bool"),
        (2.5, "float"),
    ],
)
def test_the_type_walk_still_finds_a_forbidden_value_anywhere(value: object, name: str) -> None:
    # the walk collects a list's item types in C now; what it refuses is unchanged
    with pytest.raises(protocol.LocalProtocolError, match=f"{name} values are not allowed"):
        protocol.pack(value)
    data = msgpack.packb(value, use_bin_type=True)
    with pytest.raises(protocol.RemoteProtocolError, match=f"{name} values are not allowed"):
        protocol.unpack(data)
