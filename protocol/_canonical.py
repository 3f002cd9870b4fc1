"""Canonical msgpack: one byte string for one value, checked on the way in.

Values are built from ``int``, ``bytes``, ``str`` and ``list`` only. Maps, floats, nil,
booleans and extension types never appear, and decoding refuses them. msgpack-python
already writes every integer, string, byte string and array header in its shortest form,
so the canonical encoding is simply its output; decoding re-encodes the value and refuses
any input whose bytes differ (a longer integer form, a ``str 8`` where a ``fixstr`` fits,
trailing bytes, ...).

Decoding cost is bounded by the input's length *and* by the number of arrays it may build:
each array is a Python list (about 60 bytes and a few hundred nanoseconds to build, walk and
re-encode), and a byte of input can open one, so a megabyte of nested one-byte array
headers would cost a second of CPU and tens of MiB. No message of the protocol is that
dense: beyond a small allowance its arrays each carry a key, a hash or a few fields, so a
value may hold at most ``ARRAY_ALLOWANCE + len(data) // BYTES_PER_ARRAY`` arrays; decoding
stops at the first one over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from ._errors import LocalProtocolError, RemoteProtocolError
from ._limits import MAX_ARRAY_LEN, MAX_BIN_LEN, MAX_MESSAGE_BYTES, MAX_STR_LEN

#: Arrays any decoded value may hold whatever its length: more than the densest value the
#: protocol defines holds (a job's outputs: at most 256 tensors of two arrays each).
ARRAY_ALLOWANCE = 1024
#: Beyond the allowance, one array per this many bytes of input. The protocol's long lists
#: hold arrays of a key or hash and more (a genesis allocation, a dropped-transaction
#: notice: over 32 bytes each); a tree of nested arrays holds one per one or two bytes.
BYTES_PER_ARRAY = 16


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
_ALLOWED = frozenset((int, bytes, str, list))


def _check_types(value: Any) -> None:
    """Refuse floats, nil and booleans anywhere: the wire format has none.

    A list's item types are collected in C (``set(map(type, ...))``), so a long list of
    scalars costs no Python step per item (a 256 KiB list of small integers took 60 ms
    item by item, review round 5, R5-2)."""
    if type(value) is not list:
        if type(value) not in _SCALARS:
            raise RemoteProtocolError(f"{type(value).__name__} values are not allowed on the wire")
        return
    stack = [value]
    while stack:
        v = stack.pop()
        kinds = set(map(type, v))
        if kinds <= _ALLOWED:
            if list in kinds:
                stack.extend([x for x in v if type(x) is list])
            continue
        bad = next(x for x in reversed(v) if type(x) not in _ALLOWED)
        raise RemoteProtocolError(f"{type(bad).__name__} values are not allowed on the wire")


def unpack(
    data: bytes,
    *,
    max_bytes: int = MAX_MESSAGE_BYTES,
    check_types: bool = True,
    max_bin_bytes: int = MAX_BIN_LEN,
    max_arrays: int | None = None,
) -> Any:
    """Decode canonical bytes, enforcing size limits while decoding.

    Raises :class:`RemoteProtocolError` for anything that is not exactly the canonical
    encoding of an allowed value. ``check_types=False`` skips the walk that refuses floats,
    nil and booleans, for callers that check every item's type themselves (records do).
    ``max_bin_bytes`` raises the 1 MiB a byte string may hold, for a frame that carries
    more than signed messages (the market's sealed outputs). ``max_arrays`` bounds the
    arrays the value may hold (default ``ARRAY_ALLOWANCE + len(data) // BYTES_PER_ARRAY``):
    decoding stops at the first one over, so a tree of nested arrays costs little.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RemoteProtocolError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise RemoteProtocolError(
            f"message of {len(data)} bytes exceeds the {max_bytes}-byte limit"
        )
    data = bytes(data)
    if max_arrays is None:
        max_arrays = ARRAY_ALLOWANCE + len(data) // BYTES_PER_ARRAY
    try:
        value = msgpack.unpackb(
            data,
            # Each array takes at least its one-byte header: shorter data cannot go over.
            list_hook=_array_counter(max_arrays, len(data)) if len(data) > max_arrays else None,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_bin_len=min(max_bin_bytes, max_bytes),
            max_str_len=min(MAX_STR_LEN, max_bytes),
            max_array_len=MAX_ARRAY_LEN,
            max_map_len=0,
            max_ext_len=0,
        )
    except RemoteProtocolError:
        raise
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


def _array_counter(limit: int, size: int) -> Callable[[list[Any]], list[Any]]:
    """A ``list_hook`` for msgpack that refuses the ``limit + 1``-th array it sees."""
    count = 0

    def hook(value: list[Any]) -> list[Any]:
        nonlocal count
        count += 1
        if count > limit:
            raise RemoteProtocolError(
                f"more than {limit} arrays in {size} bytes: no message of the protocol "
                "is that dense"
            )
        return value

    return hook
