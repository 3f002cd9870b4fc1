"""The node's key on disk: ``<data dir>/keys/node.key``, mode 0600 in a 0700 directory.

Writes are atomic (a private temporary file, fsync, then a hard link that fails when the
key exists, or a rename with ``force``), so a crash never leaves half a key, and an
existing key, even a damaged one, is never replaced without ``force``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

import nacl.signing

import protocol

from .._errors import KeystoreError
from . import _format
from ._errors import (
    CorruptKeyFileError,
    InsecureKeyFileError,
    KeyExistsError,
    KeyNotFoundError,
    PassphraseRequiredError,
)
from ._format import KdfParams

KEYS_DIR = "keys"
KEY_FILE = "node.key"


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """The node's Ed25519 identity: its ledger account and its libp2p peer id."""

    signing_key: nacl.signing.SigningKey = field(repr=False)
    public_key: bytes
    peer_id: str

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeIdentity:
        key = nacl.signing.SigningKey(seed)
        public_key = bytes(key.verify_key)
        return cls(key, public_key, protocol.peer_id(public_key))


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What can be known about the key without its passphrase."""

    path: Path
    public_key: bytes
    peer_id: str
    encrypted: bool
    format_version: int


def key_path(data_dir: Path) -> Path:
    """Where the node key of ``data_dir`` lives."""
    return Path(data_dir) / KEYS_DIR / KEY_FILE


def _read(path: Path) -> bytes:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyNotFoundError(
            f"no node key at {path}. Create one with `aimx keys new` "
            "(or check --data-dir / AIMX_DATA_DIR)."
        ) from None
    except OSError as exc:
        raise KeystoreError(
            f"cannot read the key file {path}: {exc.strerror}. Check its owner and permissions."
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise CorruptKeyFileError(f"{path} is not a regular file; move it away.")
    if st.st_mode & 0o077:
        raise InsecureKeyFileError(
            f"the key file {path} can be read or written by other users "
            f"(mode {stat.S_IMODE(st.st_mode):04o}). Run `chmod 600 {path}`, and consider "
            "the key exposed if this machine has other users."
        )
    try:
        with path.open("rb") as f:
            data = f.read(_format.MAX_FILE_SIZE + 1)
    except OSError as exc:
        raise KeystoreError(
            f"cannot read the key file {path}: {exc.strerror}. Check its owner and permissions."
        ) from None
    return data


def read_key_info(data_dir: Path) -> KeyInfo:
    """The public part of the node key (no passphrase needed)."""
    path = key_path(data_dir)
    header = _format.decode_key_file_header(_read(path), str(path))
    return KeyInfo(
        path, header.public_key, protocol.peer_id(header.public_key), header.encrypted, 1
    )


def load_identity(data_dir: Path, passphrase: str | None = None) -> NodeIdentity:
    """The node key of ``data_dir``, decrypted with ``passphrase`` if it is encrypted."""
    path = key_path(data_dir)
    data = _read(path)
    header = _format.decode_key_file_header(data, str(path))
    if header.encrypted and passphrase is None:
        raise PassphraseRequiredError(
            f"the key {path} is encrypted: give its passphrase with --passphrase-file, "
            "the AIMX_PASSPHRASE environment variable, or at the prompt."
        )
    try:
        seed = _format.decode_key_file(data, passphrase, str(path))
    except ValueError as exc:  # an empty passphrase
        raise PassphraseRequiredError(f"{exc}.") from None
    return NodeIdentity.from_seed(seed)


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_identity(
    data_dir: Path,
    passphrase: str | None = None,
    *,
    force: bool = False,
    kdf: KdfParams | None = None,
    seed: bytes | None = None,
) -> NodeIdentity:
    """Make a new key (from ``seed`` if given, else random) and store it in ``data_dir``.

    Refuses to replace an existing key file, valid or not, unless ``force``.
    """
    data_dir = Path(data_dir)
    path = key_path(data_dir)
    if not force and (path.exists() or path.is_symlink()):
        raise KeyExistsError(
            f"a node key already exists at {path}; it was left untouched. Replacing it gives "
            "this node a new identity and account: pass --force if you mean that."
        )
    seed = secrets.token_bytes(_format.SEED_SIZE) if seed is None else seed
    if passphrase is None:
        data = _format.encode_plain_key_file(seed)
    else:
        try:
            data = _format.encode_encrypted_key_file(
                seed,
                passphrase,
                salt=secrets.token_bytes(_format.SALT_SIZE),
                nonce=secrets.token_bytes(_format.NONCE_SIZE),
                kdf=kdf or KdfParams.moderate(),
            )
        except ValueError as exc:
            raise PassphraseRequiredError(f"{exc}.") from None
    if not data_dir.exists():
        _private_dir(data_dir)
    _private_dir(path.parent)
    tmp = path.parent / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise KeyExistsError(
                    f"a node key appeared at {path} while this one was being written; it was "
                    "left untouched."
                ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(path.parent)
    return NodeIdentity.from_seed(seed)


def load_or_create_identity(data_dir: Path, passphrase: str | None = None) -> NodeIdentity:
    """The daemon's entry point: load the node key, or create one on first start.

    An existing key that cannot be read (damaged, wrong passphrase, insecure mode) raises
    and is never replaced. A new key is encrypted when ``passphrase`` is given.
    """
    try:
        return load_identity(data_dir, passphrase)
    except KeyNotFoundError:
        pass
    try:
        return create_identity(data_dir, passphrase)
    except KeyExistsError:  # another process created it between our two steps
        return load_identity(data_dir, passphrase)
