"""``aimx ledger balance|history|verify|reset``: read and check the local copy of the
ledger, and move a broken one aside."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

import ledger
import protocol

from .._errors import KeystoreError, NodeError
from ..ledger import ledger_db_path, overdue_escrows
from ._common import DataDirOption, JsonOption, command_group, resolve_data_dir, user_errors

ledger_app = command_group(
    "ledger",
    "The credit ledger: balances, history, and a full verification of the local chain.",
)

AccountArg = Annotated[
    str | None,
    typer.Argument(
        help="Account as a peer id (12D3KooW...) or 64 hex digits. Default: this node's key.",
        show_default=False,
    ),
]

CREDIT = 1_000_000


class LedgerCommandError(NodeError):
    """The ledger command cannot run (no ledger, bad account, corrupt store)."""


def credits(amount: int) -> str:
    """Micro-credits as a decimal credit amount, exactly."""
    whole, frac = divmod(amount, CREDIT)
    return f"{whole}.{frac:06d}"


def parse_account(value: str | None, data_dir: Path) -> bytes:
    if value is None:
        from ..keystore import read_key_info

        try:
            return read_key_info(data_dir).public_key
        except KeystoreError as exc:
            raise LedgerCommandError(
                f"no ACCOUNT given and this node has no key ({exc}); pass an account"
            ) from None
    if len(value) == 64:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    try:
        return protocol.public_key_of(value)
    except (protocol.ProtocolError, ValueError):
        raise LedgerCommandError(
            f"{value!r} is not an account: give a peer id (12D3KooW...) or 64 hex digits"
        ) from None


def open_store(data_dir: Path) -> ledger.LedgerStore:
    path = ledger_db_path(data_dir)
    if not path.exists():
        raise LedgerCommandError(
            f"no ledger in {data_dir} (expected {path}); start the node or a devnet first"
        )
    try:
        return ledger.LedgerStore.open(path)
    except ledger.LedgerError as exc:
        raise LedgerCommandError(
            f"{exc}\n  to move it aside and sync the chain again at the node's next start: "
            f"aimx ledger reset --data-dir {data_dir}"
        ) from None


@contextmanager
def account_ledger(
    ctx: typer.Context, data_dir: Path | None, account: str | None
) -> Iterator[tuple[bytes, ledger.LedgerStore]]:
    """The account asked about (default: this node's) and the local ledger, open."""
    root = resolve_data_dir(data_dir, ctx)
    key = parse_account(account, root)
    with open_store(root) as store:
        yield key, store


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True))


@ledger_app.command()
def balance(
    ctx: typer.Context,
    account: AccountArg = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show an account's balance, stake, unbonding stake and reputation."""
    with user_errors():
        with account_ledger(ctx, data_dir, account) as (key, store):
            state = store.state
            entry = state.account(key)
            reputation = state.reputation(key)
            info = {
                "account": protocol.peer_id(key),
                "height": state.height,
                "balance": entry.balance,
                "stake": entry.stake,
                "unbonding": [{"release_height": h, "amount": x} for h, x in entry.unbonding],
                "next_seq": entry.next_seq,
                "reputation": float(reputation),
                "reputation_exact": f"{reputation.numerator}/{reputation.denominator}",
            }
        if as_json:
            _print_json(info)
            return
        console = Console()
        console.print(f"account    {info['account']}")
        console.print(f"height     {state.height}")
        console.print(f"balance    {credits(entry.balance)} credits")
        console.print(f"stake      {credits(entry.stake)} credits")
        for height, amount in entry.unbonding:
            console.print(f"unbonding  {credits(amount)} credits, released at height {height}")
        console.print(f"reputation {float(reputation):.4f}")


def describe(raw: bytes, chain_id: str) -> dict[str, Any]:
    """A transaction as a JSON-able summary (it was validated when its block was applied)."""
    vtx = ledger.verify_tx(raw, chain_id)
    t = vtx.tx
    out: dict[str, Any] = {
        "id": vtx.id.hex(),
        "kind": t.kind,
        "sender": protocol.peer_id(t.sender),
        "seq": None if vtx.unsequenced else t.seq,  # None: a claim that takes no number
        "fee": t.fee,
    }
    p = vtx.payload
    for name, _ in p.specs():
        value = getattr(p, name)
        if isinstance(value, bytes):
            out[name] = (
                protocol.peer_id(value)
                if name in ("to", "offender", "subject")
                else (value.hex() if len(value) <= 32 else f"<{len(value)} bytes>")
            )
        elif isinstance(value, int | str):
            out[name] = value
        elif name == "payouts":
            out[name] = {protocol.peer_id(x.provider): x.amount for x in value}
        else:
            out[name] = f"<{len(value)} items>"
    return out


@ledger_app.command()
def history(
    ctx: typer.Context,
    account: AccountArg = None,
    limit: Annotated[int, typer.Option(help="Most transactions to show.", min=1)] = 20,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the latest transactions concerning an account, newest first."""
    with user_errors():
        with account_ledger(ctx, data_dir, account) as (key, store):
            chain_id = store.genesis.chain_id
            rows = [
                {"height": e.height, "index": e.index, **describe(e.raw, chain_id)}
                for e in store.history(key, limit)
            ]
        if as_json:
            _print_json(rows)
            return
        table = Table(title=f"transactions of {protocol.peer_id(key)}")
        for col in ("height", "kind", "from", "details", "fee"):
            table.add_column(col)
        for r in rows:
            details = ", ".join(
                f"{k}={v}"
                for k, v in r.items()
                if k not in ("height", "index", "id", "kind", "sender", "seq", "fee")
            )
            table.add_row(
                str(r["height"]), r["kind"], r["sender"][:16] + "…", details, str(r["fee"])
            )
        Console().print(table)
        if not rows:
            Console().print("no transactions")


OpenEscrowsOption = Annotated[
    int | None,
    typer.Option(
        "--open-escrows",
        metavar="BLOCKS",
        min=0,
        help=(
            "Also list the escrows still open more than BLOCKS blocks past their expiry "
            "height, and exit 1 if there is any (every escrow closes while its owner's "
            "node runs)."
        ),
        show_default=False,
    ),
]


@ledger_app.command()
def verify(
    ctx: typer.Context,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
    open_escrows: OpenEscrowsOption = None,
) -> None:
    """Replay the chain from genesis: every signature, hash link, state root and invariant.

    Exits non-zero on any failure (with --open-escrows BLOCKS: also when an escrow is
    open more than BLOCKS blocks past its expiry).
    """
    with user_errors():
        root = resolve_data_dir(data_dir, ctx)
        with open_store(root) as store:
            try:
                report = ledger.verify_chain(store)
            except ledger.LedgerError as exc:
                raise LedgerCommandError(
                    f"ledger verification FAILED: {exc}\n  to move it aside and sync the "
                    f"chain again at the node's next start: aimx ledger reset --data-dir {root}"
                ) from None
            proofs = store.proofs()
            state = store.state
            overdue = (
                overdue_escrows(state.escrows(), state.height, open_escrows)
                if open_escrows is not None
                else []
            )
        late: list[dict[str, Any]] = [
            {
                "job_id": job_id.hex(),
                "owner": protocol.peer_id(e.owner),
                "expiry_height": e.expiry_height,
                "blocks_past_expiry": state.height - e.expiry_height,
                "remaining": e.remaining,
            }
            for job_id, e in overdue
        ]
        summary = {
            "ok": True,
            "chain_id": report.chain_id,
            "height": report.height,
            "transactions": report.transactions,
            "state_root": report.state_root.hex(),
            "minted": report.minted,
            "burned": report.burned,
            "fees": report.fees,
            "accounts": report.accounts,
            "escrows": report.escrows,
            "equivocation_proofs": [
                {
                    "height": p.height,
                    "producers": [protocol.peer_id(k) for k in p.producers],
                }
                for p in proofs
            ],
        }
        if open_escrows is not None:
            summary["open_past_expiry"] = late
            summary["ok"] = not late
        if as_json:
            _print_json(summary)
            if late:
                raise typer.Exit(1)
            return
        console = Console()
        console.print(
            f"[green]ok[/] chain {report.chain_id}: {report.height} blocks, "
            f"{report.transactions} transactions verified"
        )
        console.print(f"state root {report.state_root.hex()}")
        console.print(
            f"minted {credits(report.minted)}, burned {credits(report.burned)}, "
            f"fees {credits(report.fees)} credits; {report.accounts} accounts, "
            f"{report.escrows} escrows"
        )
        for p in proofs:
            console.print(
                f"[yellow]equivocation[/] at height {p.height} by "
                f"{', '.join(sorted({protocol.peer_id(k) for k in p.producers}))}"
            )
        if open_escrows is None:
            return
        for row in late:
            console.print(
                f"[red]open[/] escrow of job {row['job_id']} (owner {row['owner']}): "
                f"{credits(row['remaining'])} credits, expired at height "
                f"{row['expiry_height']}, {row['blocks_past_expiry']} blocks ago"
            )
        if late:
            raise LedgerCommandError(
                f"{len(late)} escrows are open more than {open_escrows} blocks past their "
                "expiry; their owners' nodes refund them while they run"
            )
        console.print(f"no escrow is open more than {open_escrows} blocks past its expiry")


@ledger_app.command()
def reset(ctx: typer.Context, data_dir: DataDirOption = None) -> None:
    """Move this node's ledger aside (renamed, not deleted): at its next start the node
    syncs the chain again from the chain's coordinators.

    For a ledger that is corrupt or was altered (`aimx ledger verify` fails, the node
    refuses to start). Refused while the node runs, and on the chain's only coordinator,
    which no node could give the chain back to.
    """
    from ..daemon._run import data_dir_lock
    from ..daemon.genesis import read_genesis
    from ..keystore import read_key_info

    with user_errors():
        root = resolve_data_dir(data_dir, ctx)
        path = ledger_db_path(root)
        if not path.exists():
            raise LedgerCommandError(f"no ledger in {root} (expected {path}): nothing to reset")
        with data_dir_lock(root):  # a running node holds it: DataDirInUse names its pid
            genesis = read_genesis(root)
            try:
                me: bytes | None = read_key_info(root).public_key
            except KeystoreError:
                me = None
            if genesis is not None and me is not None and set(genesis.coordinators) == {me}:
                raise LedgerCommandError(
                    f"this node is the only coordinator of chain {genesis.chain_id!r}: no node "
                    f"can give it the chain back; copy ledger/ledger.sqlite3 from another node "
                    f"of the chain (stopped, and checked with aimx ledger verify) over {path}"
                )
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            moved = []
            for suffix in ("", "-wal", "-shm"):
                source = path.with_name(path.name + suffix)
                if source.exists():
                    target = path.with_name(f"{path.name}.broken-{stamp}{suffix}")
                    os.rename(source, target)
                    moved.append(target)
        Console().print(
            f"moved the ledger aside to {moved[0]}; the node syncs the chain again from its "
            "coordinators at its next start (delete the old files when you no longer need them)"
        )
