"""The field-by-field reference of specs/messages.md, generated from the message classes.

A test checks that the committed spec equals this output, so the spec and the code cannot
drift apart. Regenerate with ``python scripts/specgen.py``.
"""

from __future__ import annotations

from ._examples import VECTOR_CHAIN_ID, VECTOR_SEED, example_signed
from ._messages import ALL_MESSAGES, GpuInfo, InputRef, Requirements, Usage, VerificationPolicy
from ._schema import Record, field_docs

BEGIN = "<!-- BEGIN GENERATED: python scripts/specgen.py -->"
END = "<!-- END GENERATED -->"

NESTED: tuple[type[Record], ...] = (GpuInfo, InputRef, Requirements, VerificationPolicy, Usage)


def _doc(cls: type[Record]) -> str:
    return " ".join((cls.__doc__ or "").split())


def _table(cls: type[Record]) -> list[str]:
    docs = field_docs(cls)
    lines = ["| # | field | type | meaning |", "| --- | --- | --- | --- |"]
    for i, (name, spec) in enumerate(cls.specs()):
        lines.append(f"| {i} | `{name}` | {spec.describe()} | {docs[name]} |")
    return lines


def _hex_lines(raw: bytes, width: int = 64) -> list[str]:
    text = raw.hex()
    return [text[i : i + 2 * width] for i in range(0, len(text), 2 * width)]


def message_reference() -> str:
    out: list[str] = [BEGIN, ""]
    out.append("### Signed messages")
    out.append("")
    for m in ALL_MESSAGES:
        out.append(f"#### {m.__name__}")
        out.append("")
        signer = f"; the signer must equal `{m.SIGNER_FIELD}`" if m.SIGNER_FIELD else ""
        out.append(f"Tag `{m.TAG}`{signer}. {_doc(m)}")
        out.append("")
        out.extend(_table(m))
        out.append("")
    out.append("### Nested records")
    out.append("")
    for r in NESTED:
        out.append(f"#### {r.__name__}")
        out.append("")
        out.append(_doc(r))
        out.append("")
        out.extend(_table(r))
        out.append("")
    out.append("### Test vectors")
    out.append("")
    out.append(
        f"Signed with the Ed25519 key whose seed is bytes `{VECTOR_SEED.hex()}` on chain id "
        f"`{VECTOR_CHAIN_ID}`; the field values are those of `protocol/_examples.py`. "
        "Each vector is the complete wire encoding `[tag, chain_id, body, signer, signature]`."
    )
    out.append("")
    for s in example_signed():
        out.append(f"#### {type(s.message).__name__} ({len(s.raw)} bytes)")
        out.append("")
        out.append("```")
        out.extend(_hex_lines(s.raw))
        out.append("```")
        out.append("")
    out.append(END)
    return "\n".join(out)
