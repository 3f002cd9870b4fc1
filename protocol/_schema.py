"""Field specifications: how one field is checked, encoded and decoded.

A message is a frozen dataclass whose fields are annotated with a spec, for example
``price: Annotated[int, UInt()]``. The spec checks the value both when we build a message
(a :class:`LocalProtocolError`) and when a peer's message is decoded (a
:class:`RemoteProtocolError`), so every length and range is bounded in one place.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Sequence
from typing import Any, ClassVar, Self

from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ._limits import MAX_ARRAY_LEN, MAX_STR_LEN, MAX_UINT


class Spec:
    """How one field is validated and converted to and from its msgpack value."""

    def dump(self, value: Any, path: str, err: type[ProtocolError]) -> Any:
        raise NotImplementedError

    def load(self, value: Any, path: str, err: type[ProtocolError]) -> Any:
        return self.dump(value, path, err)

    def describe(self) -> str:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True, slots=True)
class UInt(Spec):
    """An unsigned integer in ``[min, max]`` (``bool`` is refused)."""

    max: int = MAX_UINT
    min: int = 0

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

    def dump(self, value: Any, path: str, err: type[ProtocolError]) -> Any:
        if not isinstance(value, self.cls):
            raise err(f"{path}: expected {self.cls.__name__}, got {type(value).__name__}")
        return value.to_wire(path, err)

    def load(self, value: Any, path: str, err: type[ProtocolError]) -> Any:
        return self.cls.from_wire(value, path, err)

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


class Record:
    """Base of every message and nested record: a frozen dataclass with annotated specs.

    Fields are encoded as a msgpack array in declaration order; the order is part of the
    wire format (see specs/messages.md).
    """

    __slots__ = ()
    _specs: ClassVar[tuple[tuple[str, Spec], ...]]

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
        for name, spec in self.specs():
            value = getattr(self, name)
            spec.dump(value, name, LocalProtocolError)
            if isinstance(spec, ListOf) and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))

    def wire(self) -> list[Any]:
        """The msgpack value of an already-checked record (no re-validation: it is frozen)."""
        out: list[Any] = []
        for name, spec in self.specs():
            value = getattr(self, name)
            if isinstance(spec, Nested):
                out.append(value.wire())
            elif isinstance(spec, ListOf):
                if isinstance(spec.item, Nested):
                    out.append([v.wire() for v in value])
                else:
                    out.append(list(value))
            else:
                out.append(value)
        return out

    def to_wire(self, path: str = "", err: type[ProtocolError] = LocalProtocolError) -> list[Any]:
        prefix = f"{path}." if path else ""
        return [spec.dump(getattr(self, n), prefix + n, err) for n, spec in self.specs()]

    @classmethod
    def from_wire(
        cls, value: Any, path: str = "", err: type[ProtocolError] = RemoteProtocolError
    ) -> Self:
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
