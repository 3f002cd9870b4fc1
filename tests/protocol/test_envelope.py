"""Signed envelopes: round trips, tampering, cross-type and cross-chain replay."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol
from protocol import ALL_MESSAGES, Bid, LocalProtocolError, Message, ProtocolError

from ..keys import key, pub
from .strategies import messages

KEY = key("signer")
ME = pub(KEY)
CHAIN = "aimx-test"

any_message = st.sampled_from(ALL_MESSAGES).flatmap(lambda cls: messages(cls, ME))


@settings(max_examples=300)
@given(any_message)
def test_every_message_round_trips(msg: Message) -> None:
    signed = protocol.sign(msg, KEY, CHAIN)
    back = protocol.decode(signed.raw, CHAIN, type(msg))
    assert back.message == msg
    assert back.signer == ME
    assert back.raw == signed.raw
    assert back.id == protocol.content_hash(signed.raw)
    # the unsigned framing round-trips too
    assert protocol.decode_unsigned(protocol.encode_unsigned(msg), type(msg)) == msg


@settings(max_examples=300)
@given(any_message, st.data())
def test_any_byte_mutation_is_a_protocol_error(msg: Message, data: st.DataObject) -> None:
    raw = protocol.sign(msg, KEY, CHAIN).raw
    i = data.draw(st.integers(0, len(raw) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != raw[i]))
    mutated = raw[:i] + bytes([new]) + raw[i + 1 :]
    with pytest.raises(ProtocolError):
        protocol.decode(mutated, CHAIN, type(msg))


@settings(max_examples=200)
@given(any_message, st.data())
def test_any_truncation_or_extension_is_a_protocol_error(msg: Message, data: st.DataObject) -> None:
    raw = protocol.sign(msg, KEY, CHAIN).raw
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(ProtocolError):
        protocol.decode(raw[:cut], CHAIN, type(msg))
    extra = data.draw(st.binary(min_size=1, max_size=8))
    with pytest.raises(ProtocolError):
        protocol.decode(raw + extra, CHAIN, type(msg))


@settings(max_examples=200)
@given(any_message, st.sampled_from(ALL_MESSAGES))
def test_signature_never_verifies_as_another_type(msg: Message, other: type[Message]) -> None:
    """Re-labelling a signed body with another type's tag never verifies."""
    signed = protocol.sign(msg, KEY, CHAIN)
    if other is type(msg):
        return
    # Same body and signature under another tag: must fail (tag is inside the signed bytes).
    forged = protocol.pack([other.TAG, CHAIN, msg.wire(), signed.signer, signed.signature])
    with pytest.raises(ProtocolError):
        protocol.decode(forged, CHAIN, other)
    # And a decoder expecting another type refuses the genuine message.
    with pytest.raises(ProtocolError):
        protocol.decode(signed.raw, CHAIN, other)


@settings(max_examples=200)
@given(any_message, st.from_regex(r"[a-z0-9\-]{1,20}", fullmatch=True))
def test_signature_never_verifies_on_another_chain(msg: Message, chain: str) -> None:
    if chain == CHAIN:
        return
    signed = protocol.sign(msg, KEY, CHAIN)
    with pytest.raises(ProtocolError):
        protocol.decode(signed.raw, chain, type(msg))
    forged = protocol.pack([msg.TAG, chain, msg.wire(), signed.signer, signed.signature])
    with pytest.raises(ProtocolError):
        protocol.decode(forged, chain, type(msg))


def _bid(provider: bytes = ME, **kw: object) -> Bid:
    fields: dict[str, object] = dict(
        job_id=bytes(32),
        provider=provider,
        price=1,
        est_finish_ms=2,
        determinism_class="ort-1.32.0/cpu/avx2/extended",
        bench_score=3,
        expires_ms=4,
    )
    fields.update(kw)
    return Bid(**fields)  # type: ignore[arg-type]


def test_nobody_signs_in_anothers_name() -> None:
    victim = bytes([9]) * 32
    with pytest.raises(LocalProtocolError, match="signing key"):
        protocol.sign(_bid(provider=victim), KEY, CHAIN)
    # Built by hand: the provider field names the victim, the signature is ours.
    body = _bid(provider=victim)
    sig = KEY.sign(protocol.signing_bytes(body, CHAIN)).signature
    forged = protocol.pack([Bid.TAG, CHAIN, body.wire(), ME, sig])
    with pytest.raises(protocol.RemoteProtocolError, match="does not match the signer"):
        protocol.decode(forged, CHAIN, Bid)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price", -1),
        ("price", 1 << 64),
        ("price", True),
        ("price", 1.5),
        ("job_id", bytes(31)),
        ("job_id", "not bytes"),
        ("determinism_class", "has space"),
        ("determinism_class", "x" * 200),
    ],
)
def test_invalid_fields_are_refused_when_building(field: str, value: object) -> None:
    with pytest.raises(LocalProtocolError, match=field):
        _bid(**{field: value})


@settings(max_examples=20)
@given(messages(protocol.Advert, ME))
def test_lists_become_tuples_and_records_are_hashable(msg: protocol.Advert) -> None:
    assert isinstance(msg.addresses, tuple)
    assert hash(msg) == hash(protocol.Advert.from_wire(msg.wire()))


def test_decode_needs_an_expected_type() -> None:
    with pytest.raises(LocalProtocolError):
        protocol.decode(b"", CHAIN)


def test_bad_chain_id_is_refused_when_signing() -> None:
    with pytest.raises(LocalProtocolError, match="chain id"):
        protocol.sign(_bid(), KEY, "")
