"""Hypothesis strategies that build any valid message from its field specs."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from protocol import Bin, ListOf, Message, Nested, Record, Text, UInt
from protocol._schema import Spec


def for_spec(spec: Spec) -> st.SearchStrategy[Any]:
    if isinstance(spec, UInt):
        return st.integers(min_value=spec.min, max_value=spec.max)
    if isinstance(spec, Bin):
        if spec.size is not None:
            return st.binary(min_size=spec.size, max_size=spec.size)
        return st.binary(max_size=min(spec.max, 300))
    if isinstance(spec, Text):
        if spec.choices:
            return st.sampled_from(spec.choices)
        if spec.pattern is not None:
            return st.from_regex(spec.pattern, fullmatch=True).filter(
                lambda s: len(s.encode()) <= spec.max
            )
        return st.text(max_size=spec.max // 4)
    if isinstance(spec, ListOf):
        return st.lists(for_spec(spec.item), max_size=min(spec.max, 3), unique=spec.unique).map(
            tuple
        )
    if isinstance(spec, Nested):
        return records(spec.cls)
    raise TypeError(f"no strategy for {spec!r}")


def records(cls: type[Record], **fixed: Any) -> st.SearchStrategy[Any]:
    fields = {
        name: (st.just(fixed[name]) if name in fixed else for_spec(spec))
        for name, spec in cls.specs()
    }
    return st.builds(cls, **fields)


def messages(cls: type[Message], signer: bytes) -> st.SearchStrategy[Any]:
    fixed = {cls.SIGNER_FIELD: signer} if cls.SIGNER_FIELD else {}
    return records(cls, **fixed)
