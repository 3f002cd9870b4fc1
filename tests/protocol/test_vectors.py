"""The test vectors and field tables in specs/messages.md are the code's."""

from __future__ import annotations

import re
from pathlib import Path

import protocol
from protocol._docs import BEGIN, END, message_reference
from protocol._examples import VECTOR_CHAIN_ID, example_messages, vector_key

SPEC = Path(__file__).resolve().parents[2] / "specs" / "messages.md"


def test_spec_reference_is_generated_from_the_code() -> None:
    text = SPEC.read_text()
    generated = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert generated == message_reference(), "run: python scripts/specgen.py"


def test_every_vector_decodes_to_its_message_and_re_signs_identically() -> None:
    text = SPEC.read_text()
    vectors = dict(
        (name, bytes.fromhex("".join(body.split())))
        for name, body in re.findall(r"#### (\w+) \(\d+ bytes\)\n\n```\n([0-9a-f\n]+)```", text)
    )
    expected = {type(m).__name__: m for m in example_messages()}
    assert set(vectors) == set(expected)
    for name, raw in vectors.items():
        msg = expected[name]
        decoded = protocol.decode(raw, VECTOR_CHAIN_ID, type(msg))
        assert decoded.message == msg
        assert protocol.sign(msg, vector_key(), VECTOR_CHAIN_ID).raw == raw


def test_every_message_is_documented() -> None:
    text = SPEC.read_text()
    for cls in protocol.ALL_MESSAGES:
        assert f"Tag `{cls.TAG}`" in text
