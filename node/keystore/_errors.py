"""The keystore's errors, all subclasses of :class:`node.KeystoreError` (see node/_errors.py).

::

    NodeError
    └── KeystoreError              missing, unreadable or undecryptable key
        ├── KeyNotFoundError       no key file in the data directory yet
        ├── KeyExistsError         ``keys new`` would overwrite an existing key
        ├── CorruptKeyFileError    the file is not a valid key file (never overwritten)
        ├── InsecureKeyFileError   the file or its directory is readable by others
        ├── PassphraseRequiredError the key is encrypted and no passphrase was given
        └── WrongPassphraseError   the passphrase does not decrypt the key

Each message says what to do about it.
"""

from __future__ import annotations

from .._errors import KeystoreError


class KeyNotFoundError(KeystoreError):
    """There is no key file in the data directory."""


class KeyExistsError(KeystoreError):
    """A key file exists and would be overwritten."""


class CorruptKeyFileError(KeystoreError):
    """The key file is damaged or not a key file at all."""


class InsecureKeyFileError(KeystoreError):
    """The key file can be read by other users."""


class PassphraseRequiredError(KeystoreError):
    """The key is encrypted but no passphrase was supplied."""


class WrongPassphraseError(KeystoreError):
    """The passphrase does not decrypt the key."""
