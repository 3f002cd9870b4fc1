"""Fuzzing every decoder: random and mutated bytes give a ProtocolError and nothing else."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

import protocol
from protocol import ALL_MESSAGES, ProtocolError
from protocol._examples import VECTOR_CHAIN_ID, example_signed

CASES_PER_DECODER = 10_000


def _corpus(rng: random.Random, seeds: list[bytes]) -> list[bytes]:
    """Half purely random strings, half mutations of valid messages."""
    out: list[bytes] = []
    for i in range(CASES_PER_DECODER):
        if i % 2 == 0:
            out.append(rng.randbytes(rng.randrange(0, 400)))
            continue
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 6)):
            op = rng.randrange(4)
            pos = rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[pos % len(data)] = rng.randrange(256)
            elif op == 1:
                data[pos:pos] = rng.randbytes(rng.randrange(1, 9))
            elif op == 2:
                del data[pos : pos + rng.randrange(1, 9)]
            else:
                data = data[:pos]
        out.append(bytes(data))
    return out


DECODERS: dict[str, Callable[[bytes], object]] = {
    **{
        f"decode[{cls.__name__}]": (
            lambda data, cls=cls: protocol.decode(data, VECTOR_CHAIN_ID, cls)
        )
        for cls in ALL_MESSAGES
    },
    "decode[any]": lambda data: protocol.decode(data, VECTOR_CHAIN_ID, *ALL_MESSAGES),
    "decode_unsigned": lambda data: protocol.decode_unsigned(data, *ALL_MESSAGES),
    "unpack": protocol.unpack,
    "public_key_of": lambda data: protocol.public_key_of(data.decode("latin-1")),
}


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_only_protocol_errors_come_out(name: str) -> None:
    decoder = DECODERS[name]
    seeds = [s.raw for s in example_signed()]
    seeds += [protocol.encode_unsigned(s.message) for s in example_signed()]
    rng = random.Random(f"fuzz-{name}")
    accepted = 0
    originals = set(seeds)
    for data in _corpus(rng, seeds):
        try:
            decoder(data)
            accepted += data not in originals  # a "mutation" that changed nothing is fine
        except ProtocolError:
            pass
    # Some mutations are still valid for unpack (any msgpack value); for signed decoders a
    # mutation must essentially never verify.
    if name.startswith("decode["):
        assert accepted == 0
