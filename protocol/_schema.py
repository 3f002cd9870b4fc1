"""Field specifications: how one field is checked, encoded and decoded.

A message is a frozen dataclass whose fields are annotated with a spec, for example
``price: Annotated[int, UInt()]``. The spec checks the value both when we build a message
(a :class:`LocalProtocolError`) and when a peer's message is decoded (a
:class:`RemoteProtocolError`), so every length and range is bounded in one place.

Each spec states its rules twice. ``dump`` and ``load`` are the reference: they check a
value and name the first thing wrong with it, with its path. ``expression`` writes the
same rules as a Python expression, from which each record class generates, once, a
``check`` of all its fields and a ``load`` of its wire value (:class:`_Fast`): no paths or
messages to build, no regex to look up, one function call for a whole record. A record
runs the fast path first and, when it refuses anything, runs the reference, which raises
the error (or accepts: a refusal by the fast path costs time, never a different outcome).
tests/protocol/test_fast_paths.py checks that both accept exactly the same values.
"""

from __future__ import annotations

import dataclasses
import operator
import re
import typing
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Self

from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ._limits import MAX_ARRAY_LEN, MAX_STR_LEN, MAX_UINT

#: A fast check: True exactly when the spec's ``dump`` accepts the value.
Check = Callable[[Any], bool]
#: A fast load: what the spec's ``load`` returns, or :class:`Mismatch` where it raises.
Load = Callable[[Any], Any]


class Mismatch(Exception):
    """A fast loader refused a value: the caller runs the reference, which raises the
    error with its path and message. Never leaves this module."""


class Spec:
    """How one field is validated and converted to and from its msgpack value."""

    #: True where ``load`` is ``dump`` and returns the value itself (the scalars): the
    #: fast check is then the whole fast load.
    LOAD_IS_CHECK: ClassVar[bool] = False

    def dump(self, value: Any, path: str, err: type[ProtocolError]) -> Any:
        raise NotImplementedError

    def load(self, value: Any, path: str, err: type[ProtocolError]) -> Any:
        return self.dump(value, path, err)

    def describe(self) -> str:
        raise NotImplementedError

    def expression(self, var: str, env: dict[str, Any]) -> str:
        """A Python expression, true exactly when ``dump`` accepts the value of the variable
        ``var``; the names it uses are added to ``env``.

        This default calls ``dump``; the specs below write their rules out instead, so that
        a record's fast path checks all its scalar fields in one expression.
        """
        return f"{_bind(env, self._reference_check)}({var})"

    def _reference_check(self, value: Any) -> bool:
        try:
            self.dump(value, "", LocalProtocolError)
        except ProtocolError:
            return False
        return True

    def checker(self) -> Check:
        """A predicate: True exactly when ``dump`` raises no :class:`ProtocolError`."""
        env: dict[str, Any] = {}
        check: Check = _compile("check", [f"def check(v): return {self.expression('v', env)}"], env)
        return check

    def loader(self) -> Load:
        """``load`` without a path: raises :class:`Mismatch` where ``load`` raises."""
        if self.LOAD_IS_CHECK:
            check = self.checker()

            def load_checked(value: Any) -> Any:
                if check(value):
                    return value
                raise Mismatch

            return load_checked
        load = self.load

        def load_reference(value: Any) -> Any:
            try:
                return load(value, "", RemoteProtocolError)
            except ProtocolError:
                raise Mismatch from None

        return load_reference


def _bind(env: dict[str, Any], value: Any) -> str:
    """Add ``value`` to a generated function's namespace; return the name it has there."""
    name = f"_{len(env)}"
    env[name] = value
    return name


def _compile(name: str, lines: list[str], env: dict[str, Any], where: str = "spec") -> Any:
    """The function ``name`` defined by the source ``lines``, with ``env`` as its globals
    (``where`` names it in tracebacks and profiles: ``<protocol fast path: JobSpec>``)."""
    exec(compile("\n".join(lines), f"<protocol fast path: {where}>", "exec"), env)
    return env[name]


@dataclasses.dataclass(frozen=True, slots=True)
class UInt(Spec):
    """An unsigned integer in ``[min, max]`` (``bool`` is refused)."""

    max: int = MAX_UINT
    min: int = 0

    LOAD_IS_CHECK: ClassVar[bool] = True

    def expression(self, var: str, env: dict[str, Any]) -> str:
        return f"(type({var}) is int and {self.min} <= {var} <= {self.max})"

    def dump(self, value: Any, path: str, err: type[ProtocolError]) -> Any:
        if type(value) is not int:
            raise err(f"{path}: expected an integer, got {type(value).__name__}")
        if not self.min <= value <= self.max:
            raise err(f"{path}: {value} is outside [{self.min}, {self.max}]")
        return value

    def describe(self) -> str:
        if self.min == 0 and self.max == MAX_UINT:
            return "uint64"
        return f"uint in [{self.min}, {self.max}]"


@dataclasses.dataclass(frozen=True, slots=True)
class Bin(Spec):
    """A byte string of exactly ``size`` bytes, or of at most ``max`` bytes."""

    size: int | None = None
    max: int = 0

    LOAD_IS_CHECK: ClassVar[bool] = True

    def expression(self, var: str, env: dict[str, Any]) -> str:
        if self.size is not None:
            return f"(type({var}) is bytes and len({var}) == {self.size})"
        return f"(type({var}) is bytes and len({var}) <= {self.max})"

    def dump(self, value: Any, path: str, err: type[ProtocolError]) -> Any:
        if type(value) is not bytes:
            raise err(f"{path}: expected bytes, got {type(value).__name__}")
        if self.size is not None and len(value) != self.size:
            raise err(f"{path}: expected {self.size} bytes, got {len(value)}")
        if self.size is None and len(value) > self.max:
            raise err(f"{path}: {len(value)} bytes exceeds the limit of {self.max}")
        return value

    def describe(self) -> str:
        return (
            f"bin, exactly {self.size} bytes"
            if self.size is not None
            else f"bin, ≤ {self.max} bytes"
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Text(Spec):
    """UTF-8 text of at most ``max`` bytes, optionally restricted to choices or a pattern."""

    max: int = 256
    choices: tuple[str, ...] = ()
    pattern: str | None = None

    LOAD_IS_CHECK: ClassVar[bool] = True

    def expression(self, var: str, env: dict[str, Any]) -> str:
        if self.choices:
            # A valid value equals one of the choices: the choices that pass every rule are
            # exactly the valid values.
            allowed = frozenset(c for c in self.choices if self._reference_check(c))
            return f"(type({var}) is str and {var} in {_bind(env, allowed)})"
        limit = min(self.max, MAX_STR_LEN)
        # UTF-8 (with surrogatepass) takes at most 4 bytes a character: a string of at most
        # limit // 4 characters is within the limit without being encoded.
        length = (
            f"(len({var}) <= {limit // 4} "
            f"or len({var}.encode('utf-8', 'surrogatepass')) <= {limit})"
        )
        if self.pattern is None:
            return f"(type({var}) is str and {length})"
        match = _bind(env, re.compile(self.pattern).fullmatch)
        return f"(type({var}) is str and {length} and {match}({var}) is not None)"

    def dump(self, value: Any, path: str, err: type[ProtocolError]) -> Any:
        if type(value) is not str:
            raise err(f"{path}: expected a string, got {type(value).__name__}")
        if len(value.encode("utf-8", "surrogatepass")) > min(self.max, MAX_STR_LEN):
            raise err(f"{path}: string longer than {self.max} bytes")
        if self.choices and value not in self.choices:
            raise err(f"{path}: {value!r} is not one of {', '.join(self.choices)}")
        if self.pattern is not None and re.fullmatch(self.pattern, value) is None:
            raise err(f"{path}: {value!r} does not match {self.pattern}")
        return value

    def describe(self) -> str:
        if self.choices:
            return "str, one of " + ", ".join(f"`{c}`" for c in self.choices)
        extra = f", matching `{self.pattern}`" if self.pattern else ""
        return f"str, ≤ {self.max} bytes UTF-8{extra}"


@dataclasses.dataclass(frozen=True, slots=True)
class ListOf(Spec):
    """An array of at most ``max`` items, each checked by ``item``."""

    item: Spec
    max: int = 64
    unique: bool = False

    def expression(self, var: str, env: dict[str, Any]) -> str:
        return f"{_bind(env, self.checker())}({var})"

    def checker(self) -> Check:
        limit, unique, item = min(self.max, MAX_ARRAY_LEN), self.unique, self.item.checker()

        def check(value: Any) -> bool:
            return (
                isinstance(value, list | tuple)
                and len(value) <= limit
                and all(map(item, value))
                and (not unique or len(set(value)) == len(value))
            )

        return check

    def loader(self) -> Load:
        limit, unique = min(self.max, MAX_ARRAY_LEN), self.unique
        item_check = self.item.checker() if self.item.LOAD_IS_CHECK else None
        item_load = self.item.loader()

        def load(value: Any) -> Any:
            if type(value) is not list or len(value) > limit:
                raise Mismatch
            if item_check is None:
                out = tuple(map(item_load, value))
            elif all(map(item_check, value)):
                out = tuple(value)
            else:
                raise Mismatch
            if unique and len(set(out)) != len(out):
                raise Mismatch
            return out

        return load

    def dump(self, value: Any, path: str, err: type[ProtocolError]) -> Any:
        if not isinstance(value, list | tuple):
            raise err(f"{path}: expected an array, got {type(value).__name__}")
        if len(value) > min(self.max, MAX_ARRAY_LEN):
            raise err(f"{path}: {len(value)} items exceeds the limit of {self.max}")
        out = [self.item.dump(v, f"{path}[{i}]", err) for i, v in enumerate(value)]
        self._check_unique(value, path, err)
        return out

    def load(self, value: Any, path: str, err: type[ProtocolError]) -> Any:
        if type(value) is not list:
            raise err(f"{path}: expected an array, got {type(value).__name__}")
        if len(value) > min(self.max, MAX_ARRAY_LEN):
            raise err(f"{path}: {len(value)} items exceeds the limit of {self.max}")
        out = tuple(self.item.load(v, f"{path}[{i}]", err) for i, v in enumerate(value))
        self._check_unique(out, path, err)
        return out

    def _check_unique(self, value: Sequence[Any], path: str, err: type[ProtocolError]) -> None:
        if self.unique and len(set(value)) != len(value):
            raise err(f"{path}: items must be unique")

    def describe(self) -> str:
        u = ", unique" if self.unique else ""
        return f"array (≤ {self.max} items{u}) of {self.item.describe()}"


@dataclasses.dataclass(frozen=True, slots=True)
class Nested(Spec):
    """A nested record (encoded as an array of its fields, without a tag)."""

    cls: type[Record]

    def expression(self, var: str, env: dict[str, Any]) -> str:
        cls = self.cls
        check = _bind(env, lambda value: _fast_of(type(value)).check(value))
        return f"(isinstance({var}, {_bind(env, cls)}) and {check}({var}))"

    def loader(self) -> Load:
        return _fast_of(self.cls).load

    def dump(self, value: Any, path: str, err: type[ProtocolError]) -> Any:
        if not isinstance(value, self.cls):
            raise err(f"{path}: expected {self.cls.__name__}, got {type(value).__name__}")
        return value.to_wire(path, err)

    def load(self, value: Any, path: str, err: type[ProtocolError]) -> Any:
        return self.cls.from_wire_reference(value, path, err)

    def describe(self) -> str:
        return f"[{self.cls.__name__}](#{self.cls.__name__.lower()})"


def field_docs(cls: type[Record]) -> dict[str, str]:
    """The description strings annotated on each field (used by the spec generator)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out: dict[str, str] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        meta = getattr(hints[f.name], "__metadata__", ())
        out[f.name] = " ".join(m for m in meta if isinstance(m, str))
    return out


def _specs_of(cls: type[Record]) -> tuple[tuple[str, Spec], ...]:
    hints = typing.get_type_hints(cls, include_extras=True)
    out: list[tuple[str, Spec]] = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        meta = getattr(hints[f.name], "__metadata__", ())
        specs = [m for m in meta if isinstance(m, Spec)]
        if len(specs) != 1:
            raise TypeError(f"{cls.__name__}.{f.name} needs exactly one Spec annotation")
        out.append((f.name, specs[0]))
    return tuple(out)


#: How :meth:`Record.wire` converts a field: kept as is, a nested record, a tuple of
#: values, a tuple of nested records.
_PLAIN, _NESTED, _SEQUENCE, _NESTED_SEQUENCE = range(4)


class _Fast:
    """A record class's fast paths, built once from its specs (see the module docstring).

    ``check(record)`` and ``load(value)`` are generated from the specs' expressions; for a
    record of an integer ``a`` and a 32-byte string ``b``, ``load`` is::

        def load(value):
            if type(value) is not list or len(value) != 2:
                raise Mismatch
            f0, f1, = value
            if not ((type(f0) is int and 0 <= f0 <= 18446744073709551615)
                    and (type(f1) is bytes and len(f1) == 32)):
                raise Mismatch
            obj = new(cls)
            set_(obj, 'a', f0)
            set_(obj, 'b', f1)
            return obj

    Fields whose load converts (nested records, arrays) call their spec's loader. Safe to
    keep on the class: specs are frozen, and so is every record.
    """

    __slots__ = ("check", "conversions", "load", "sequences", "values")

    def __init__(self, cls: type[Record]) -> None:
        specs = cls.specs()
        fields = [f"f{i}" for i in range(len(specs))]
        unpack = f"    {', '.join(fields)}, = " if fields else "    "
        self.values = _getter(tuple(name for name, _ in specs))
        env: dict[str, Any] = {"values": self.values}
        every = [spec.expression(f, env) for f, (_, spec) in zip(fields, specs, strict=True)]
        lines = [
            "def check(record):",
            unpack + "values(record)",
            f"    return {' and '.join(every) or 'True'}",
        ]
        self.check: Check = _compile("check", lines, env, cls.__name__)

        env = {"Mismatch": Mismatch, "new": object.__new__, "set_": object.__setattr__}
        env["cls"] = cls
        scalars = [
            spec.expression(f, env)
            for f, (_, spec) in zip(fields, specs, strict=True)
            if spec.LOAD_IS_CHECK
        ]
        lines = [
            "def load(value):",
            f"    if type(value) is not list or len(value) != {len(specs)}:",
            "        raise Mismatch",
            unpack + "value",
            f"    if not ({' and '.join(scalars) or 'True'}):",
            "        raise Mismatch",
            "    obj = new(cls)",
        ]
        for f, (name, spec) in zip(fields, specs, strict=True):
            value = f if spec.LOAD_IS_CHECK else f"{_bind(env, spec.loader())}({f})"
            lines.append(f"    set_(obj, {name!r}, {value})")
        lines.append("    return obj")
        self.load: Load = _compile("load", lines, env, cls.__name__)

        self.sequences = tuple(name for name, spec in specs if isinstance(spec, ListOf))
        self.conversions = tuple(
            (i, kind) for i, (_, spec) in enumerate(specs) if (kind := _wire_kind(spec))
        )

    def wire(self, record: Record) -> list[Any]:
        out = list(self.values(record))
        for i, kind in self.conversions:
            value = out[i]
            if kind == _NESTED:
                out[i] = value.wire()
            elif kind == _SEQUENCE:
                out[i] = list(value)
            else:
                out[i] = [v.wire() for v in value]
        return out


def _wire_kind(spec: Spec) -> int:
    if isinstance(spec, Nested):
        return _NESTED
    if isinstance(spec, ListOf):
        return _NESTED_SEQUENCE if isinstance(spec.item, Nested) else _SEQUENCE
    return _PLAIN


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """All of a record's field values in one call (``attrgetter`` of one name returns the
    value itself, and of none is not allowed)."""
    if len(names) > 1:
        return operator.attrgetter(*names)
    if names:
        one = operator.attrgetter(names[0])
        return lambda record: (one(record),)
    return lambda record: ()


def _fast_of(cls: type[Record]) -> _Fast:
    try:
        return cls.__dict__["_fast"]  # type: ignore[no-any-return]
    except KeyError:
        fast = _Fast(cls)
        cls._fast = fast
        return fast


class Record:
    """Base of every message and nested record: a frozen dataclass with annotated specs.

    Fields are encoded as a msgpack array in declaration order; the order is part of the
    wire format (see specs/messages.md).
    """

    __slots__ = ()
    _specs: ClassVar[tuple[tuple[str, Spec], ...]]
    _fast: ClassVar[_Fast]

    @classmethod
    def specs(cls) -> tuple[tuple[str, Spec], ...]:
        try:
            return cls.__dict__["_specs"]  # type: ignore[no-any-return]
        except KeyError:
            specs = _specs_of(cls)
            cls._specs = specs
            return specs

    def __post_init__(self) -> None:
        # Building a message checks it: an invalid message is our bug (LocalProtocolError).
        fast = _fast_of(type(self))
        if not fast.check(self):
            self._check_fields()  # raises the reference's error
            return
        for name in fast.sequences:
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))

    def _check_fields(self) -> None:
        """The reference check of a record being built: the first invalid field's error."""
        for name, spec in self.specs():
            value = getattr(self, name)
            spec.dump(value, name, LocalProtocolError)
            if isinstance(spec, ListOf) and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))

    def wire(self) -> list[Any]:
        """The msgpack value of an already-checked record (no re-validation: it is frozen)."""
        return _fast_of(type(self)).wire(self)

    def to_wire(self, path: str = "", err: type[ProtocolError] = LocalProtocolError) -> list[Any]:
        prefix = f"{path}." if path else ""
        return [spec.dump(getattr(self, n), prefix + n, err) for n, spec in self.specs()]

    @classmethod
    def from_wire(
        cls, value: Any, path: str = "", err: type[ProtocolError] = RemoteProtocolError
    ) -> Self:
        """Decode and check a record's msgpack value (``err`` with the first bad field's
        path where it is invalid)."""
        try:
            return _fast_of(cls).load(value)  # type: ignore[no-any-return]
        except Mismatch:
            return cls.from_wire_reference(value, path, err)

    @classmethod
    def from_wire_reference(
        cls, value: Any, path: str = "", err: type[ProtocolError] = RemoteProtocolError
    ) -> Self:
        """:meth:`from_wire` field by field through each spec's ``load``: the reference the
        fast path is tested against, and what names the error when a value is invalid."""
        specs = cls.specs()
        where = path or cls.__name__
        if type(value) is not list:
            raise err(f"{where}: expected an array, got {type(value).__name__}")
        if len(value) != len(specs):
            raise err(f"{where}: expected {len(specs)} fields, got {len(value)}")
        obj = object.__new__(cls)
        setattr_ = object.__setattr__
        if path:
            for (name, spec), v in zip(specs, value, strict=True):
                setattr_(obj, name, spec.load(v, f"{path}.{name}", err))
        else:
            for (name, spec), v in zip(specs, value, strict=True):
                setattr_(obj, name, spec.load(v, name, err))
        return obj
