"""Canonical msgpack: one byte string for one value, checked on the way in.

Values are built from ``int``, ``bytes``, ``str`` and ``list`` only. Maps, floats, nil,
booleans and extension types never appear, and decoding refuses them. msgpack-python
already writes every integer, string, byte string and array header in its shortest form,
so the canonical encoding is simply its output; decoding re-encodes the value and refuses
any input whose bytes differ (a longer integer form, a ``str 8`` where a ``fixstr`` fits,
trailing bytes, ...).
"""

from __future__ import annotations

from typing import Any

import msgpack

from ._errors import LocalProtocolError, RemoteProtocolError
from ._limits import MAX_ARRAY_LEN, MAX_BIN_LEN, MAX_MESSAGE_BYTES, MAX_STR_LEN


def pack(value: Any) -> bytes:
    """Canonical bytes of ``value`` (raises :class:`LocalProtocolError` on a bad type)."""
    try:
        _check_types(value)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(str(exc)) from None
    return pack_checked(value)


def pack_checked(value: Any) -> bytes:
    """:func:`pack` for values already known to hold only allowed types (records' wire())."""
    try:
        return msgpack.packb(value, use_bin_type=True, strict_types=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode value: {exc}") from exc


_SCALARS = (int, bytes, str)


def _check_types(value: Any) -> None:
    """Refuse floats, nil and booleans anywhere: the wire format has none."""
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is list:
            stack.extend(v)
        elif t not in _SCALARS:
            raise RemoteProtocolError(f"{t.__name__} values are not allowed on the wire")


def unpack(
    data: bytes,
    *,
    max_bytes: int = MAX_MESSAGE_BYTES,
    check_types: bool = True,
    max_bin_bytes: int = MAX_BIN_LEN,
) -> Any:
    """Decode canonical bytes, enforcing size limits while decoding.

    Raises :class:`RemoteProtocolError` for anything that is not exactly the canonical
    encoding of an allowed value. ``check_types=False`` skips the walk that refuses floats,
    nil and booleans, for callers that check every item's type themselves (records do).
    ``max_bin_bytes`` raises the 1 MiB a byte string may hold, for a frame that carries
    more than signed messages (the market's sealed outputs).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RemoteProtocolError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise RemoteProtocolError(
            f"message of {len(data)} bytes exceeds the {max_bytes}-byte limit"
        )
    data = bytes(data)
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_bin_len=min(max_bin_bytes, max_bytes),
            max_str_len=min(MAX_STR_LEN, max_bytes),
            max_array_len=MAX_ARRAY_LEN,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many types; all mean "not a message"
        raise RemoteProtocolError(f"not valid msgpack: {type(exc).__name__}: {exc}") from None
    if check_types:
        _check_types(value)
    try:
        again = msgpack.packb(value, use_bin_type=True, strict_types=True)
    except Exception as exc:
        raise RemoteProtocolError(f"value cannot be re-encoded: {exc}") from None
    if again != data:
        raise RemoteProtocolError("encoding is not canonical")
    return value
