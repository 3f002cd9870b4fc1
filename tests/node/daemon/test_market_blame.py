"""Issue 18: a market message the machines cannot decode used to be logged as from
"peer unknown" (the machines see bytes, not who sent them); the market names the sender."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import protocol
import scheduler
from node.daemon._conduct import Conduct
from node.daemon._metrics import NodeMetrics
from node.daemon.market import Market

from ...keys import key


class _Effects:
    def __init__(self, conduct: Conduct) -> None:
        self.conduct = conduct

    def execute(self, machine: str, effects: list[scheduler.Effect]) -> None:
        for effect in effects:
            if isinstance(effect, scheduler.Misbehaved):
                self.conduct.misbehaved(effect.peer, effect.reason)


class _Node:
    def __init__(self) -> None:
        self.conduct = Conduct(NodeMetrics())
        self.effects = _Effects(self.conduct)


async def test_an_undecodable_message_is_blamed_on_its_sender(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node: Any = _Node()
    sender = bytes(key(91).verify_key)
    caplog.set_level(logging.WARNING, logger="node.daemon")
    Market(node).feed("provider", sender, lambda: [scheduler.Misbehaved(None, "not msgpack")])
    assert node.conduct.counts == {protocol.peer_id(sender): 1}
    assert f"peer {protocol.peer_id(sender)} misbehaved: not msgpack" in caplog.text
    assert "unknown" not in caplog.text


async def test_a_forwarded_award_is_blamed_on_the_forwarder_never_on_its_signer() -> None:
    # Review of issue 14: a provider awarded by R forwarded R's signed Award to another
    # provider again and again; that provider counted each against R (the Award's signer)
    # and banned R, an honest requester, for 10 minutes. Now the sender is counted.
    node: Any = _Node()
    requester, forwarder = bytes(key(92).verify_key), bytes(key(93).verify_key)
    market = Market(node)
    for _ in range(20):  # past the ban score
        market.feed(
            "provider",
            forwarder,
            lambda: [scheduler.Misbehaved(requester, "award for a job we did not bid on")],
        )
    assert protocol.peer_id(requester) not in node.conduct.counts
    assert node.conduct.counts[protocol.peer_id(forwarder)] > 0
