"""``aimx faucet ACCOUNT AMOUNT``: mint demo credits on a devnet through its coordinator."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .._errors import NodeError
from ..api import Client
from ._common import DataDirOption, JsonOption, resolve_data_dir, user_errors

CREDIT = 1_000_000


class FaucetCommandError(NodeError):
    """``aimx faucet`` cannot run as given (an amount that is no number of credits)."""


def micro_credits(amount: str) -> int:
    """``amount`` credits (decimals allowed, at most 6 places) as micro-credits."""
    try:
        value = Decimal(amount) * CREDIT
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite() or value <= 0 or value != value.to_integral_value():
        raise FaucetCommandError(
            f"amount {amount!r}: give a positive number of credits with at most 6 decimals, "
            "e.g. 10 or 2.5"
        )
    return int(value)


def faucet(
    ctx: typer.Context,
    account: Annotated[str, typer.Argument(help="The account to fund (a peer id).")],
    amount: Annotated[str, typer.Argument(help="Credits to mint, e.g. 10 or 2.5.")],
    coordinator_dir: Annotated[
        Path | None,
        typer.Option(
            "--coordinator-dir",
            help="The coordinator's data directory (default: --data-dir).",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Mint devnet credits to ACCOUNT through the coordinator's faucet (POST /api/faucet)."""
    with user_errors():
        micro = micro_credits(amount)
        directory = coordinator_dir.expanduser() if coordinator_dir else None
        with Client.for_data_dir(directory or resolve_data_dir(data_dir, ctx)) as client:
            body = client.faucet(account, micro)
        if as_json:
            typer.echo(json.dumps(body, sort_keys=True))
        else:
            Console().print(
                f"minted {body['amount'] / CREDIT:.6f} credits to {body['account']} "
                "(in the next block)",
                soft_wrap=True,
            )
