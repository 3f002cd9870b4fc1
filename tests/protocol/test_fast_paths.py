"""The generated fast paths of records agree with the reference checks on any input.

Every record checks its fields twice over: the specs' ``dump``/``load`` (the reference, which
names the error) and the fast ``check``/``load`` generated from the specs' expressions
(protocol/_schema.py). These tests feed both arbitrary values, valid, nearly valid and wild,
and require the same outcome: the same record, or the same error class and message.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocol
from protocol import (
    ALL_MESSAGES,
    Bin,
    ListOf,
    LocalProtocolError,
    Nested,
    ProtocolError,
    Record,
    RemoteProtocolError,
    Text,
    UInt,
    content_hash,
)
from protocol._examples import VECTOR_CHAIN_ID, example_signed, vector_key
from protocol._schema import Spec

from .strategies import for_spec

# --- values: valid, nearly valid, wild -------------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.binary(max_size=40),
    st.text(st.characters(exclude_categories=()), max_size=40),
)
WILD: st.SearchStrategy[Any] = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner), max_leaves=8
)

# One character of each UTF-8 length (1 to 4 bytes) and a lone surrogate (3 bytes with
# surrogatepass): strings of them straddle a Text limit in characters and in bytes.
_WIDE = st.sampled_from(["a", "é", "€", "😀", "\ud800", "-", "/", " ", "\n"])


def _near(spec: Spec) -> st.SearchStrategy[Any]:
    """Values at and just past the edges of ``spec``'s rules."""
    if isinstance(spec, UInt):
        edges = [spec.min - 1, spec.min, spec.max, spec.max + 1, True, False]
        return st.sampled_from(edges) | st.integers(spec.min - 3, spec.max + 3)
    if isinstance(spec, Bin):
        n = spec.size if spec.size is not None else spec.max
        sizes = st.integers(max(0, n - 2), n + 2) if n < 4096 else st.just(n + 1)
        return sizes.map(lambda k: b"\x01" * k) | st.builds(bytearray, st.binary(max_size=4))
    if isinstance(spec, Text):
        limit = min(spec.max, protocol._limits.MAX_STR_LEN)
        # k characters repeating a short mix: k near the limit in characters or in bytes
        sizes = st.sampled_from([limit // 4 - 1, limit // 4, limit // 4 + 1, limit // 3, limit])
        mix = st.lists(_WIDE, min_size=1, max_size=4).map("".join)
        long = st.tuples(sizes, mix).map(lambda km: (km[1] * km[0])[: km[0]])
        choices = st.sampled_from(spec.choices or ("",))
        edited = choices.map(lambda c: c + "x") | choices.map(lambda c: c[:-1]) | choices
        return long | edited | st.text(_WIDE, max_size=8)
    if isinstance(spec, ListOf):
        lists = st.lists(st.one_of(_valid(spec.item), _near(spec.item)), max_size=4)
        dupes = _valid(spec.item).map(lambda v: [v, v])
        return lists | lists.map(tuple) | dupes
    if isinstance(spec, Nested):
        return st.one_of(_valid(spec), WILD)
    return WILD


def _valid(spec: Spec) -> st.SearchStrategy[Any]:
    if isinstance(spec, Even):
        return st.integers(-10, 10).map(lambda i: 2 * i)
    return for_spec(spec)


def _value(spec: Spec) -> st.SearchStrategy[Any]:
    return st.one_of(_valid(spec), _near(spec), WILD)


def _wire_value(spec: Spec) -> st.SearchStrategy[Any]:
    """A value as it could arrive in a peer's message: a valid field's wire form, or a
    nearly valid or wild one (tuples are lists on the wire)."""
    valid = _valid(spec).map(lambda v: _wire_of(spec, v))
    return st.one_of(valid, _near(spec).map(_tuples_to_lists), WILD.map(_tuples_to_lists))


def _wire_of(spec: Spec, value: Any) -> Any:
    if isinstance(spec, Nested):
        return value.wire()
    if isinstance(spec, ListOf):
        return [_wire_of(spec.item, v) for v in value]
    return value


def _tuples_to_lists(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_tuples_to_lists(v) for v in value]
    return value


def _outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return ("ok", fn(*args))
    except ProtocolError as exc:
        return (type(exc).__name__, str(exc))


# Every record class the protocol defines, nested ones included, and a test-only record with
# a spec that has no expression of its own (the default one that calls ``dump``).


@dataclasses.dataclass(frozen=True, slots=True)
class Even(Spec):
    """A spec with only a reference ``dump``: an even integer."""

    def dump(self, value: Any, path: str, err: type[ProtocolError]) -> Any:
        if type(value) is not int or value % 2:
            raise err(f"{path}: expected an even integer")
        return value

    def describe(self) -> str:
        return "even integer"


@dataclasses.dataclass(frozen=True, slots=True)
class Odd(Record):
    even: Annotated[int, Even()]
    names: Annotated[tuple[str, ...], ListOf(Text(max=8, pattern="[a-z]+"), max=3, unique=True)]
    one: Annotated[tuple[protocol.Usage, ...], ListOf(Nested(protocol.Usage), max=2)]


def _records() -> list[type[Record]]:
    out: list[type[Record]] = [Odd]
    todo: list[type[Record]] = list(ALL_MESSAGES)
    while todo:
        cls = todo.pop()
        if cls in out:
            continue
        out.append(cls)
        for _, spec in cls.specs():
            while isinstance(spec, ListOf):
                spec = spec.item
            if isinstance(spec, Nested):
                todo.append(spec.cls)
    return out


RECORDS = _records()
# Each distinct spec once, under the first field that has it.
_FIRST = {spec: f"{c.__name__}.{name}" for c in reversed(RECORDS) for name, spec in c.specs()}
SPECS = sorted(_FIRST.items(), key=lambda item: item[1])


def test_every_nested_record_is_covered() -> None:
    names = {cls.__name__ for cls in RECORDS}
    assert {"GpuInfo", "InputRef", "Requirements", "VerificationPolicy", "Usage"} <= names


# --- one spec ----------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "name"), SPECS, ids=[n for _, n in SPECS])
@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_specs_check_accepts_what_dump_accepts(
    spec: Spec, name: str, data: st.DataObject
) -> None:
    value = data.draw(_value(spec))
    check = spec.checker()
    assert check(value) == (_outcome(spec.dump, value, name, LocalProtocolError)[0] == "ok")


@pytest.mark.parametrize(("spec", "name"), SPECS, ids=[n for _, n in SPECS])
@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_specs_loader_loads_what_load_loads(spec: Spec, name: str, data: st.DataObject) -> None:
    value = data.draw(_wire_value(spec))
    reference = _outcome(spec.load, value, name, RemoteProtocolError)
    try:
        fast: tuple[str, Any] = ("ok", spec.loader()(value))
    except protocol._schema.Mismatch:
        fast = ("refused", None)
    if reference[0] == "ok":
        assert fast == reference
    else:
        assert fast[0] == "refused"


# --- whole records: decoding and building ----------------------------------------------


@pytest.mark.parametrize("cls", RECORDS, ids=[c.__name__ for c in RECORDS])
@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_from_wire_matches_the_reference(cls: type[Record], data: st.DataObject) -> None:
    specs = cls.specs()
    fields = [data.draw(_wire_value(spec)) for _, spec in specs]
    value = data.draw(st.sampled_from([fields, fields[:-1], [*fields, 0]]) | WILD)
    for path in ("", "outer.field"):
        fast = _outcome(cls.from_wire, value, path)
        reference = _outcome(cls.from_wire_reference, value, path)
        assert fast == reference


@pytest.mark.parametrize("cls", RECORDS, ids=[c.__name__ for c in RECORDS])
@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_building_matches_the_reference(cls: type[Record], data: st.DataObject) -> None:
    fields = {name: data.draw(_value(spec)) for name, spec in cls.specs()}

    def reference() -> Record:
        obj = object.__new__(cls)
        for name, v in fields.items():
            object.__setattr__(obj, name, v)
        obj._check_fields()
        return obj

    assert _outcome(lambda: cls(**fields)) == _outcome(reference)


def test_building_a_record_keeps_its_arrays_as_tuples() -> None:
    usage = protocol.Usage(cpu_ms=1, wall_ms=2, peak_memory_kb=3, gpu_ms=0)
    odd = Odd(even=2, names=["a", "b"], one=[usage])  # type: ignore[arg-type]
    assert odd.names == ("a", "b") and odd.one == (usage,)
    assert odd.wire() == [2, ["a", "b"], [[1, 2, 3, 0]]]
    assert Odd.from_wire(odd.wire()) == odd


def test_errors_name_the_field_as_before() -> None:
    body = next(s for s in example_signed() if type(s.message) is protocol.JobSpec).message.wire()
    body[5][0][0] = "not a name!"
    with pytest.raises(RemoteProtocolError, match=r"^job.inputs\[0\].name: 'not a name!'"):
        protocol.JobSpec.from_wire(body, "job")
    with pytest.raises(LocalProtocolError, match=r"^price: -1 is outside"):
        protocol.Bid(
            job_id=bytes(32),
            provider=bytes(32),
            price=-1,
            est_finish_ms=0,
            determinism_class="x",
            bench_score=0,
            expires_ms=0,
        )


# --- envelopes -----------------------------------------------------------------------------


def test_a_signed_messages_id_is_hashed_once_and_stays_out_of_equality() -> None:
    for signed in example_signed():
        copy = protocol.decode(signed.raw, VECTOR_CHAIN_ID, type(signed.message))
        assert copy == signed
        assert signed.id == content_hash(signed.raw)
        assert signed.id is signed.id
        assert copy == signed and hash(copy.raw) == hash(signed.raw)
        assert repr(signed).endswith(f"raw={signed.raw!r})")


@settings(max_examples=50)
@given(price=st.integers(0, 2**64 - 1), detail=st.text(max_size=20))
def test_signed_bytes_are_the_canonical_encoding(price: int, detail: str) -> None:
    key = vector_key()
    me = bytes(key.verify_key)
    message = protocol.NoBid(
        job_id=bytes(32), provider=me, reason="busy", detail=detail, price_floor=price
    )
    signed = protocol.sign(message, key, VECTOR_CHAIN_ID)
    expected = protocol.pack(
        [message.TAG, VECTOR_CHAIN_ID, message.wire(), signed.signer, signed.signature]
    )
    assert signed.raw == expected
