"""The key file format, version 1: encoding and decoding only, no I/O.

The layout is specified byte by byte in specs/identity.md. In short::

    magic "AIMXKEY\\0" | version 1 | kind | Ed25519 public key (32) | body | BLAKE2b-256 checksum

kind 0 (plain): the body is the 32-byte Ed25519 seed.
kind 1 (encrypted): opslimit u32 | memlimit KiB u32 | salt (16) | nonce (24) | the seed sealed
with XChaCha20-Poly1305 (IETF) under the argon2id-derived key, with every byte before the
ciphertext as associated data (48 bytes). The checksum covers every byte before it, so a
damaged file is told apart from a wrong passphrase.
"""

from __future__ import annotations

import hashlib
import struct
import unicodedata
from dataclasses import dataclass
from typing import Final

import nacl.bindings
import nacl.exceptions
import nacl.pwhash
import nacl.signing

from ._errors import CorruptKeyFileError, WrongPassphraseError

MAGIC: Final = b"AIMXKEY\x00"
VERSION: Final = 1
KIND_PLAIN: Final = 0
KIND_ARGON2ID_XCHACHA20POLY1305: Final = 1

SEED_SIZE: Final = 32
PUBLIC_KEY_SIZE: Final = 32
SALT_SIZE: Final = 16
NONCE_SIZE: Final = 24
TAG_SIZE: Final = 16
CHECKSUM_SIZE: Final = 32

_HEADER = struct.Struct(">8sBB32s")  # magic, version, kind, public key
_KDF = struct.Struct(">II16s24s")  # opslimit, memlimit KiB, salt, nonce
PLAIN_SIZE: Final = _HEADER.size + SEED_SIZE + CHECKSUM_SIZE
ENCRYPTED_SIZE: Final = _HEADER.size + _KDF.size + SEED_SIZE + TAG_SIZE + CHECKSUM_SIZE
MAX_FILE_SIZE: Final = 4096  # anything longer is not ours; read no more than this

# Bounds accepted when reading, so a damaged or hostile file cannot make us spend minutes or
# gigabytes deriving a key. Writing uses argon2id's "moderate" profile by default.
MIN_OPSLIMIT: Final = nacl.pwhash.argon2id.OPSLIMIT_MIN
MAX_OPSLIMIT: Final = 32
MIN_MEMLIMIT_KIB: Final = nacl.pwhash.argon2id.MEMLIMIT_MIN // 1024
MAX_MEMLIMIT_KIB: Final = 4 * 1024 * 1024  # 4 GiB


@dataclass(frozen=True, slots=True)
class KdfParams:
    """argon2id cost parameters: ``opslimit`` passes and ``memlimit_kib`` KiB of memory."""

    opslimit: int
    memlimit_kib: int

    @classmethod
    def moderate(cls) -> KdfParams:
        """libsodium's recommended profile for keys at rest (about 0.5-1 s, 256 MiB)."""
        return cls(
            nacl.pwhash.argon2id.OPSLIMIT_MODERATE, nacl.pwhash.argon2id.MEMLIMIT_MODERATE // 1024
        )

    @classmethod
    def interactive(cls) -> KdfParams:
        """A cheaper profile (about 0.1 s, 64 MiB)."""
        return cls(
            nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
            nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE // 1024,
        )

    def check(self) -> None:
        if not MIN_OPSLIMIT <= self.opslimit <= MAX_OPSLIMIT:
            raise ValueError(f"opslimit must be in [{MIN_OPSLIMIT}, {MAX_OPSLIMIT}]")
        if not MIN_MEMLIMIT_KIB <= self.memlimit_kib <= MAX_MEMLIMIT_KIB:
            raise ValueError(f"memlimit_kib must be in [{MIN_MEMLIMIT_KIB}, {MAX_MEMLIMIT_KIB}]")


@dataclass(frozen=True, slots=True)
class KeyFileHeader:
    """What a key file says without its passphrase."""

    version: int
    kind: int
    public_key: bytes
    kdf: KdfParams | None

    @property
    def encrypted(self) -> bool:
        return self.kind == KIND_ARGON2ID_XCHACHA20POLY1305


def normalize_passphrase(passphrase: str) -> bytes:
    """The bytes a passphrase stands for: UTF-8 of its NFC form (refuses the empty one)."""
    if passphrase == "":
        raise ValueError("the passphrase is empty; leave it out to store the key unencrypted")
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def _checksum(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=CHECKSUM_SIZE).digest()


def _public_key_of(seed: bytes) -> bytes:
    return bytes(nacl.signing.SigningKey(seed).verify_key)


def _derive(passphrase: str, salt: bytes, kdf: KdfParams) -> bytes:
    return nacl.pwhash.argon2id.kdf(
        nacl.bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES,
        normalize_passphrase(passphrase),
        salt,
        opslimit=kdf.opslimit,
        memlimit=kdf.memlimit_kib * 1024,
    )


def encode_plain_key_file(seed: bytes) -> bytes:
    """A kind-0 key file holding ``seed`` in the clear."""
    if len(seed) != SEED_SIZE:
        raise ValueError("an Ed25519 seed is 32 bytes")
    body = _HEADER.pack(MAGIC, VERSION, KIND_PLAIN, _public_key_of(seed)) + seed
    return body + _checksum(body)


def encode_encrypted_key_file(
    seed: bytes, passphrase: str, *, salt: bytes, nonce: bytes, kdf: KdfParams
) -> bytes:
    """A kind-1 key file: ``seed`` sealed under ``passphrase`` (salt and nonce are random)."""
    if len(seed) != SEED_SIZE:
        raise ValueError("an Ed25519 seed is 32 bytes")
    if len(salt) != SALT_SIZE or len(nonce) != NONCE_SIZE:
        raise ValueError(f"salt is {SALT_SIZE} bytes and nonce {NONCE_SIZE} bytes")
    kdf.check()
    head = _HEADER.pack(
        MAGIC, VERSION, KIND_ARGON2ID_XCHACHA20POLY1305, _public_key_of(seed)
    ) + _KDF.pack(kdf.opslimit, kdf.memlimit_kib, salt, nonce)
    key = _derive(passphrase, salt, kdf)
    sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(seed, head, nonce, key)
    body = head + sealed
    return body + _checksum(body)


def decode_key_file_header(data: bytes, where: str = "the key file") -> KeyFileHeader:
    """Check the framing and checksum of a key file and return what it says in the clear."""
    if len(data) < _HEADER.size or not data.startswith(MAGIC):
        raise CorruptKeyFileError(
            f"{where} is not an AIMatrix key file (bad magic bytes). It was left untouched; "
            "restore it from a backup, or move it away and run `aimx keys new`."
        )
    _magic, version, kind, public_key = _HEADER.unpack_from(data)
    if version != VERSION:
        raise CorruptKeyFileError(
            f"{where} has format version {version}, this aimx reads version {VERSION}. "
            "Upgrade aimx to read it."
        )
    sizes = {KIND_PLAIN: PLAIN_SIZE, KIND_ARGON2ID_XCHACHA20POLY1305: ENCRYPTED_SIZE}
    if kind not in sizes:
        raise CorruptKeyFileError(f"{where} has an unknown key kind {kind}; upgrade aimx.")
    if len(data) != sizes[kind] or _checksum(data[:-CHECKSUM_SIZE]) != data[-CHECKSUM_SIZE:]:
        raise CorruptKeyFileError(
            f"{where} is damaged (wrong length or checksum). It was left untouched; restore it "
            "from a backup, or move it away and run `aimx keys new` (a new identity)."
        )
    kdf = None
    if kind == KIND_ARGON2ID_XCHACHA20POLY1305:
        opslimit, memlimit_kib, _salt, _nonce = _KDF.unpack_from(data, _HEADER.size)
        kdf = KdfParams(opslimit, memlimit_kib)
        try:
            kdf.check()
        except ValueError as exc:
            raise CorruptKeyFileError(f"{where} has unusable argon2id parameters: {exc}") from None
    return KeyFileHeader(version, kind, bytes(public_key), kdf)


def decode_key_file(data: bytes, passphrase: str | None, where: str = "the key file") -> bytes:
    """The Ed25519 seed in a key file. ``passphrase`` is needed for kind 1 (else ignored)."""
    header = decode_key_file_header(data, where)
    if header.kind == KIND_PLAIN:
        seed = data[_HEADER.size : _HEADER.size + SEED_SIZE]
    else:
        if passphrase is None:
            raise ValueError("this key file is encrypted: a passphrase is needed")
        assert header.kdf is not None
        _ops, _mem, salt, nonce = _KDF.unpack_from(data, _HEADER.size)
        head_end = _HEADER.size + _KDF.size
        sealed = data[head_end:-CHECKSUM_SIZE]
        key = _derive(passphrase, salt, header.kdf)
        try:
            seed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                sealed, data[:head_end], nonce, key
            )
        except nacl.exceptions.CryptoError:
            raise WrongPassphraseError(
                f"wrong passphrase for {where}: it does not decrypt the key. Check "
                "--passphrase-file or AIMX_PASSPHRASE (a trailing newline in the file is "
                "ignored)."
            ) from None
    if _public_key_of(seed) != header.public_key:
        raise CorruptKeyFileError(
            f"{where} is damaged: its private key does not match its public key. It was left "
            "untouched; restore it from a backup."
        )
    return bytes(seed)
