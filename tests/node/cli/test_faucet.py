"""``aimx faucet ACCOUNT AMOUNT``: credits with decimals, minted through the coordinator; a
chain without a faucet or a node that is no coordinator gets a short answer naming the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

import protocol

from ..daemon._cluster import cluster
from .test_jobs import aimx, serving, short


@pytest.mark.parametrize("amount", ["abc", "0", "0.0000001", "nan"])
def test_an_amount_that_is_no_number_of_credits_is_refused(tmp_path: Path, amount: str) -> None:
    code, out = aimx("faucet", "12D3KooW", amount, "--data-dir", str(tmp_path))
    assert code == 1 and short(out) and "positive number of credits" in out, out


async def test_the_faucet_mints_micro_credits_or_says_why_not(tmp_path: Path) -> None:
    coordinator_dir, requester_dir = tmp_path / "c", tmp_path / "r"
    coordinator_dir.mkdir()
    requester_dir.mkdir()
    with trio.fail_after(40):
        async with (
            cluster(0) as cl,
            serving(cl.coordinator, coordinator_dir),
            serving(cl.requester, requester_dir),
        ):
            who = protocol.peer_id(cl.requester.me)
            before = cl.coordinator.ledger.state.balance(cl.requester.me)

            # the cluster's chain is no devnet: its faucet is off
            code, out = await trio.to_thread.run_sync(
                lambda: aimx("faucet", who, "2.5", "--data-dir", str(coordinator_dir))
            )
            assert code == 1 and short(out) and "coordinator.faucet = true" in out, out

            # a node that is no coordinator runs no faucet
            code, out = await trio.to_thread.run_sync(
                lambda: aimx("faucet", who, "2.5", "--data-dir", str(requester_dir))
            )
            assert code == 1 and short(out) and "--coordinator-dir" in out, out

            coord = cl.coordinator
            on = coord.config.coordinator.model_copy(update={"faucet": True})
            coord.config = coord.config.model_copy(update={"coordinator": on})
            args = ("faucet", who, "2.5", "--json", "--data-dir", str(requester_dir))
            to = ("--coordinator-dir", str(coordinator_dir))
            code, out = await trio.to_thread.run_sync(lambda: aimx(*args, *to))
            assert code == 0, out
            assert json.loads(out) == {"account": who, "amount": 2_500_000}
            await cl.settle_blocks(3)
            assert cl.coordinator.ledger.state.balance(cl.requester.me) == before + 2_500_000
