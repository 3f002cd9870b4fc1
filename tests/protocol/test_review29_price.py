"""Round 29, K1 and K3: a Bid (and so an Award) at price 0 was well formed. The requester
kept it, awarded it first (it sorts cheapest), and no ledger rule can ever pay it: its
provider, staked and agreeing with the majority, was named a slash witness the close never
paid, voiding the report of a cheat (K1); in tolerance mode it left a verified job one
payee short of its redundancy, so the honest requester never settled and the outvoted
cheat cashed its plain receipt (K3). A price is at least 1 micro-credit on the wire."""

from __future__ import annotations

import dataclasses

import pytest

import protocol
from node.testing.hostile import _sign_raw
from protocol._examples import example_messages

from ..keys import key, pub

CHAIN = "aimx-test"
SIGNER = key("bidder")


@pytest.mark.parametrize("kind", [protocol.Bid, protocol.Award])
def test_a_price_of_zero_is_refused_when_made_and_when_received(kind: type) -> None:
    example = next(m for m in example_messages() if type(m) is kind)
    with pytest.raises(protocol.ProtocolError, match="price"):
        dataclasses.replace(example, price=0)
    wire = example.wire()
    wire[[n for n, _ in kind.specs()].index(kind.SIGNER_FIELD)] = pub(SIGNER)
    priced = _sign_raw(kind.TAG, CHAIN, wire, SIGNER)
    assert protocol.decode(priced, CHAIN, kind).message.price == example.price
    wire[[n for n, _ in kind.specs()].index("price")] = 0
    with pytest.raises(protocol.RemoteProtocolError, match="price"):
        protocol.decode(_sign_raw(kind.TAG, CHAIN, wire, SIGNER), CHAIN, kind)
