"""Review round 61, R61-2: a plain receipt's key went out in the step that queued the
receipt's write, so a kill between the two left the requester the key and the provider no
receipt to claim with after its restart. The key now waits for the receipt on disk."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import trio
import trio.testing

import protocol
import scheduler
from node.daemon._effects import EffectRunner
from node.daemon._recovery import Recovery

from ...keys import pub
from ...ledger.helpers import ALICE, BOB, CHAIN, JOB, RECEIPT_KEY, award, receipt


def _provider_node(tmp_path: Path, nursery: trio.Nursery, sent: list[bytes]) -> Any:
    """A provider's node as far as its effects and kept receipts see it: one job
    receipted (plain), its award and receipt held by the machine."""
    work = SimpleNamespace(
        award=protocol.decode(award(ALICE, BOB, 100), CHAIN, protocol.Award),
        receipt=protocol.decode(receipt(ALICE, BOB), CHAIN, protocol.Receipt),
        spec=SimpleNamespace(deadline_ms=5_000),
    )
    node = SimpleNamespace(
        me=pub(BOB),
        provider=SimpleNamespace(work={JOB: work}),
        requester=None,
        jobs={},
        market=SimpleNamespace(send=lambda peer, raw, **kw: sent.append(raw)),
        spawn=nursery.start_soon,
    )
    node.recovery = Recovery(node, tmp_path)
    return node


def _plain_receipt_redeemed() -> list[scheduler.Effect]:
    """What the provider machine returns for a plain receipt on a covering escrow."""
    unseal = protocol.Unseal(JOB, pub(BOB), 0, b"\x01" * 32, RECEIPT_KEY)
    return [
        scheduler.NotifyUser(JOB, scheduler.UserEvent.RECEIPTED, "a claim is possible"),
        scheduler.Send(pub(ALICE), protocol.sign(unseal, BOB, CHAIN)),
    ]


async def test_a_plain_receipts_key_leaves_only_once_the_receipt_is_on_disk(
    tmp_path: Path,
) -> None:
    sent: list[bytes] = []
    kept = tmp_path / "receipts" / f"{JOB.hex()}.receipt"
    async with trio.open_nursery() as nursery:
        node = _provider_node(tmp_path, nursery, sent)
        EffectRunner(node).execute("provider", _plain_receipt_redeemed())
        await trio.testing.wait_all_tasks_blocked()
        # the write has not run (its worker is not started): a kill now keeps the key
        assert not kept.exists()
        assert sent == []  # the tree before: the Unseal had gone already
        nursery.start_soon(node.recovery.write_receipts)
        with trio.fail_after(10):
            while not sent:
                await trio.sleep(0.01)
        assert kept.exists()
        assert protocol.unpack(sent[0], check_types=False)[0] == protocol.Unseal.TAG
        # once the receipt is kept, a later key (a resend) goes at once
        EffectRunner(node).execute("provider", _plain_receipt_redeemed()[1:])
        assert len(sent) == 2
        nursery.cancel_scope.cancel()


async def test_a_receipt_that_cannot_be_written_still_lets_the_key_go(tmp_path: Path) -> None:
    # A full disk is logged; the machine still holds the receipt while the daemon runs, and
    # holding the key back would only fail the replica at the requester.
    sent: list[bytes] = []
    (tmp_path / "receipts").write_bytes(b"not a directory")
    async with trio.open_nursery() as nursery:
        node = _provider_node(tmp_path, nursery, sent)
        nursery.start_soon(node.recovery.write_receipts)
        EffectRunner(node).execute("provider", _plain_receipt_redeemed())
        with trio.fail_after(10):
            while not sent:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
