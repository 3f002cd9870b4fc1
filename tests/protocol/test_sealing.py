"""Sealed outputs: only the one-time key opens them, and the key is the provider's alone
to compute (it is derived from its signing key), different for every output."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocol
from protocol import RemoteProtocolError, output_key, seal_output, unseal_output

from ..keys import key

JOB = bytes(range(32))
COMMITMENT = bytes([7]) * 32


@given(st.binary(max_size=4096))
def test_the_key_opens_what_it_sealed(output: bytes) -> None:
    k = output_key(key("provider"), JOB, 0, COMMITMENT)
    sealed = seal_output(k, output)
    assert len(sealed) == len(output) + protocol.SEAL_OVERHEAD
    assert unseal_output(k, sealed) == output


def test_another_key_or_altered_bytes_open_nothing() -> None:
    k = output_key(key("provider"), JOB, 0, COMMITMENT)
    sealed = seal_output(k, b"the output tensors")
    other = output_key(key("provider"), JOB, 1, COMMITMENT)
    for bad_key, bad_sealed in (
        (other, sealed),
        (k, sealed[:-1] + bytes([sealed[-1] ^ 1])),
        (k, sealed[:5]),
        (k[:31], sealed),
    ):
        with pytest.raises(RemoteProtocolError):
            unseal_output(bad_key, bad_sealed)


def test_keys_are_the_providers_own_and_one_per_output() -> None:
    mine = output_key(key("provider"), JOB, 0, COMMITMENT)
    assert mine == output_key(key("provider"), JOB, 0, COMMITMENT)  # found again
    others = {
        output_key(key("someone else"), JOB, 0, COMMITMENT),
        output_key(key("provider"), bytes(32), 0, COMMITMENT),
        output_key(key("provider"), JOB, 1, COMMITMENT),
        output_key(key("provider"), JOB, 0, bytes(32)),
    }
    assert mine not in others and len(others) == 4
    assert protocol.key_hash(mine) == protocol.content_hash(mine) != mine
