"""Canonical msgpack: exactly one encoding per value, limits enforced while decoding."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import LocalProtocolError, RemoteProtocolError, pack, unpack

values = st.recursive(
    st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.binary(max_size=64)
    | st.text(max_size=64),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=20,
)


@given(values)
def test_round_trip(value: object) -> None:
    assert unpack(pack(value)) == value


@pytest.mark.parametrize(
    "data",
    [
        b"\xcd\x00\x05",  # uint16 holding 5 (fixint 0x05 is canonical)
        b"\xd9\x03abc",  # str8 holding a 3-byte string (fixstr is canonical)
        b"\xdc\x00\x01\x01",  # array16 of one item
        b"\x01\x02",  # trailing byte
        b"\xcb" + bytes(8),  # float64
        b"\x81\x01\x02",  # a map
        b"\xd4\x01\x00",  # an extension type
        b"\xc4",  # truncated bin8
        b"\xa3\xff\xfe\xfd",  # invalid UTF-8
        b"",
    ],
)
def test_non_canonical_or_forbidden_inputs_are_refused(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        unpack(data)


def test_size_limits_are_checked_while_decoding() -> None:
    with pytest.raises(RemoteProtocolError, match="limit"):
        unpack(pack(b"x" * 100), max_bytes=50)
    # A header announcing a 4 GiB byte string is refused without allocating it.
    with pytest.raises(RemoteProtocolError):
        unpack(b"\xc6\xff\xff\xff\xff" + b"x" * 10)
    with pytest.raises(RemoteProtocolError):
        unpack(msgpack.packb(list(range(5000))))
    # deep nesting is refused, not a crash
    with pytest.raises(RemoteProtocolError):
        unpack(b"\x91" * 100_000 + b"\x00")


def test_floats_and_maps_cannot_be_encoded() -> None:
    with pytest.raises(LocalProtocolError):
        pack(1.5)
    with pytest.raises(LocalProtocolError):
        pack({"a": 1})


def test_non_bytes_input_is_a_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError):
        unpack("text")  # type: ignore[arg-type]
