"""Envelope checks the mutation run (scripts/mutate.py) found unpinned: the chain id's
length limit admits exactly its value, and a signer that is no 32-byte key is refused as
such (the reason a peer's misbehaviour is counted with), not as a mismatch or a bad
signature."""

from __future__ import annotations

import pytest

import protocol
from protocol import Heartbeat, LocalProtocolError, RemoteProtocolError
from protocol._limits import MAX_CHAIN_ID_LEN

from ..keys import key, pub

KEY = key("signer")
CHAIN = "aimx-test"


def _heartbeat() -> Heartbeat:
    return Heartbeat(
        job_id=b"\x01" * 32, provider=pub(KEY), replica=0, progress_permille=0, sent_ms=1
    )


def test_a_chain_id_of_exactly_the_limit_signs_and_decodes_and_one_byte_more_does_not() -> None:
    longest = "c" * MAX_CHAIN_ID_LEN
    signed = protocol.sign(_heartbeat(), KEY, longest)
    assert protocol.decode(signed.raw, longest, Heartbeat).message == _heartbeat()
    with pytest.raises(LocalProtocolError, match="chain id"):
        protocol.sign(_heartbeat(), KEY, longest + "c")


@pytest.mark.parametrize("signer", [b"\x07" * 31, b"\x07" * 33, "not bytes"])
def test_a_signer_that_is_not_a_32_byte_key_is_refused_as_such(signer: object) -> None:
    tag, chain, body, _, signature = protocol.unpack(protocol.sign(_heartbeat(), KEY, CHAIN).raw)
    forged = protocol.pack([tag, chain, body, signer, signature])
    with pytest.raises(RemoteProtocolError, match="signer must be a 32-byte"):
        protocol.decode(forged, CHAIN, Heartbeat)


@pytest.mark.parametrize(
    "signature",
    [lambda s: s[:63], lambda s: s + b"\x00", lambda s: s.hex()],
    ids=["63", "65", "str"],
)
def test_a_signature_that_is_not_64_bytes_is_refused_as_such(signature: object) -> None:
    tag, chain, body, signer, good = protocol.unpack(protocol.sign(_heartbeat(), KEY, CHAIN).raw)
    assert callable(signature)
    forged = protocol.pack([tag, chain, body, signer, signature(good)])
    with pytest.raises(RemoteProtocolError, match="signature must be 64 bytes"):
        protocol.decode(forged, CHAIN, Heartbeat)
