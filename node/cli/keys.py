"""``aimx keys new|show``: the node's Ed25519 identity."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .._errors import KeystoreError
from ..keystore import (
    KeyInfo,
    PassphraseRequiredError,
    create_identity,
    load_identity,
    read_key_info,
)
from ._common import DataDirOption, JsonOption, command_group, resolve_data_dir, user_errors

PASSPHRASE_ENV = "AIMX_PASSPHRASE"

keys_app = command_group(
    "keys",
    "The node's identity: an Ed25519 key that is its account and its libp2p peer id.",
)

PassphraseFileOption = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        help=f"Read the passphrase from this file (first line). Else ${PASSPHRASE_ENV}, "
        "else a hidden prompt.",
        show_default=False,
    ),
]


def read_passphrase_file(path: Path) -> str:
    """The passphrase in ``path``: its first line, without the line ending."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeystoreError(f"cannot read the passphrase file {path}: {exc}.") from None
    line = text.splitlines()[0] if text else ""
    if not line:
        raise KeystoreError(f"the passphrase file {path} is empty; write the passphrase in it.")
    return line


def given_passphrase(passphrase_file: Path | None) -> str | None:
    """The passphrase from ``--passphrase-file`` or ``$AIMX_PASSPHRASE``, without prompting."""
    if passphrase_file is not None:
        return read_passphrase_file(passphrase_file)
    return os.environ.get(PASSPHRASE_ENV) or None


def prompt_passphrase(*, confirm: bool) -> str:
    """Ask for a passphrase on the terminal without echoing it."""
    value = typer.prompt(
        "Passphrase", hide_input=True, confirmation_prompt=confirm, show_default=False
    )
    if not isinstance(value, str) or not value:
        raise PassphraseRequiredError("the passphrase is empty.")
    return value


def _info_dict(info: KeyInfo) -> dict[str, object]:
    return {
        "peer_id": info.peer_id,
        "public_key": info.public_key.hex(),
        "key_file": str(info.path),
        "encrypted": info.encrypted,
        "format_version": info.format_version,
    }


def _print_info(info: KeyInfo, title: str, as_json: bool, extra: dict[str, object]) -> None:
    if as_json:
        typer.echo(json.dumps({**_info_dict(info), **extra}, sort_keys=True))
        return
    table = Table(title=title, show_header=False, box=None, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("account (peer id)", info.peer_id)
    table.add_row("public key", info.public_key.hex())
    table.add_row("key file", str(info.path))
    table.add_row("encrypted", "yes (argon2id + XChaCha20-Poly1305)" if info.encrypted else "no")
    for key, value in extra.items():
        table.add_row(key.replace("_", " "), str(value))
    Console().print(table)


@keys_app.command("new")
def keys_new(
    ctx: typer.Context,
    data_dir: DataDirOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing key (a new identity!).")
    ] = False,
    encrypt: Annotated[
        bool,
        typer.Option(
            "--encrypt", help="Encrypt the key with a passphrase (prompted if not given)."
        ),
    ] = False,
    passphrase_file: PassphraseFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create the node key in the data directory (refuses to overwrite one without --force).

    The key is encrypted when --encrypt, --passphrase-file or $AIMX_PASSPHRASE is given.
    """
    with user_errors():
        directory = resolve_data_dir(data_dir, ctx)
        passphrase = given_passphrase(passphrase_file)
        if passphrase is None and encrypt:
            passphrase = prompt_passphrase(confirm=True)
        create_identity(directory, passphrase, force=force)
        _print_info(read_key_info(directory), "New node key", as_json, {})


@keys_app.command("show")
def keys_show(
    ctx: typer.Context,
    data_dir: DataDirOption = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Also decrypt the private key (asks for the passphrase if it is encrypted) "
            "and check that it matches.",
        ),
    ] = False,
    passphrase_file: PassphraseFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the node's account id (its libp2p peer id) and where its key is."""
    with user_errors():
        directory = resolve_data_dir(data_dir, ctx)
        info = read_key_info(directory)
        extra: dict[str, object] = {}
        if verify:
            passphrase = given_passphrase(passphrase_file) if info.encrypted else None
            if info.encrypted and passphrase is None:
                passphrase = prompt_passphrase(confirm=False)
            identity = load_identity(directory, passphrase)
            if identity.public_key != info.public_key:  # decode checks this; belt and braces
                raise KeystoreError(f"the key file {info.path} does not match its public key.")
            extra["verified"] = True
        _print_info(info, "Node key", as_json, extra)
