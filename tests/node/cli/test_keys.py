"""``aimx keys new|show`` through the real typer app, with --data-dir and AIMX_DATA_DIR."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.peer.id import ID
from typer.testing import CliRunner

from node.cli import app
from node.keystore import key_path, load_identity

runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> tuple[int, str]:
    clean: dict[str, str | None] = {"AIMX_DATA_DIR": None, "AIMX_PASSPHRASE": None}
    result = runner.invoke(app, list(args), env={**clean, **(env or {})}, input=input)
    return result.exit_code, result.output


def test_new_then_show_with_data_dir_option(tmp_path: Path) -> None:
    code, out = run("keys", "new", "--data-dir", str(tmp_path), "--json")
    assert code == 0, out
    made = json.loads(out)
    assert made["encrypted"] is False and made["format_version"] == 1
    assert Path(made["key_file"]) == key_path(tmp_path)
    assert stat.S_IMODE(key_path(tmp_path).stat().st_mode) == 0o600
    code, out = run("keys", "show", "--data-dir", str(tmp_path), "--json")
    assert code == 0, out
    shown = json.loads(out)
    assert shown == made
    public_key = bytes.fromhex(shown["public_key"])
    libp2p_id = ID.from_pubkey(Ed25519PublicKey.from_bytes(public_key)).to_base58()
    assert shown["peer_id"] == libp2p_id
    assert load_identity(tmp_path).peer_id == libp2p_id


def test_environment_and_global_option(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    code, out = run("keys", "new", "--json", env={"AIMX_DATA_DIR": str(a)})
    assert code == 0, out
    assert key_path(a).exists()
    code, out = run("--data-dir", str(b), "keys", "new", "--json")
    assert code == 0, out
    assert key_path(b).exists()
    # two nodes on one machine: two identities
    peer_a = json.loads(run("keys", "show", "--json", env={"AIMX_DATA_DIR": str(a)})[1])
    peer_b = json.loads(run("--data-dir", str(b), "keys", "show", "--json")[1])
    assert peer_a["peer_id"] != peer_b["peer_id"]
    # the command's own option wins over the environment
    code, out = run("keys", "show", "--json", "--data-dir", str(b), env={"AIMX_DATA_DIR": str(a)})
    assert json.loads(out)["peer_id"] == peer_b["peer_id"]


def test_new_refuses_to_overwrite(tmp_path: Path) -> None:
    assert run("keys", "new", "--data-dir", str(tmp_path))[0] == 0
    before = key_path(tmp_path).read_bytes()
    code, out = run("keys", "new", "--data-dir", str(tmp_path))
    assert code == 1
    assert "already exists" in out and "--force" in out
    assert "Traceback" not in out
    assert key_path(tmp_path).read_bytes() == before
    code, out = run("keys", "new", "--data-dir", str(tmp_path), "--force")
    assert code == 0, out
    assert key_path(tmp_path).read_bytes() != before


def test_encrypted_with_passphrase_file_and_environment(tmp_path: Path) -> None:
    secret = tmp_path / "passphrase"
    secret.write_text("s3cret passphrase\n")
    data = tmp_path / "node"
    code, out = run("keys", "new", "--data-dir", str(data), "--passphrase-file", str(secret))
    assert code == 0, out
    assert "yes" in out  # encrypted, shown in the table
    code, out = run("keys", "show", "--data-dir", str(data), "--json")
    assert code == 0 and json.loads(out)["encrypted"] is True  # no passphrase needed to show
    env = {"AIMX_PASSPHRASE": "s3cret passphrase"}
    code, out = run("keys", "show", "--data-dir", str(data), "--verify", "--json", env=env)
    assert code == 0, out
    assert json.loads(out)["verified"] is True
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    code, out = run(
        "keys", "show", "--data-dir", str(data), "--verify", "--passphrase-file", str(wrong)
    )
    assert code == 1
    assert "wrong passphrase" in out and "Traceback" not in out


def test_encrypt_prompts_for_a_hidden_passphrase(tmp_path: Path) -> None:
    typed = "hunter2-secret"
    code, out = run("keys", "new", "--data-dir", str(tmp_path), "--encrypt", input=f"{typed}\n" * 2)
    assert code == 0, out
    assert typed not in out  # not echoed
    assert load_identity(tmp_path, typed).public_key.hex() in out.replace("\n", "").replace(" ", "")
    code, out = run("keys", "show", "--data-dir", str(tmp_path), "--verify", input="nope\n")
    assert code == 1 and "wrong passphrase" in out


def test_show_errors_are_one_line_messages(tmp_path: Path) -> None:
    code, out = run("keys", "show", "--data-dir", str(tmp_path))
    assert code == 1 and "aimx keys new" in out and "Traceback" not in out
    assert run("keys", "new", "--data-dir", str(tmp_path))[0] == 0
    key_path(tmp_path).write_bytes(b"garbage")
    code, out = run("keys", "show", "--data-dir", str(tmp_path))
    assert code == 1 and "not an AIMatrix key file" in out
    assert key_path(tmp_path).read_bytes() == b"garbage"
    code, out = run(
        "keys", "new", "--data-dir", str(tmp_path), "--passphrase-file", str(tmp_path / "none")
    )
    assert code == 1 and "cannot read the passphrase file" in out
