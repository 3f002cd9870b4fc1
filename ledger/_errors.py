"""Every error the ledger raises on purpose.

::

    LedgerError                    root of everything the ledger raises on purpose
    ├── GenesisError               the genesis document is invalid
    ├── TransactionRejected        a transaction is invalid against the current state
    │   ├── MalformedTransaction   undecodable, bad signature, other chain, bad payload
    │   ├── SequenceError          replayed (seq already used) or out-of-order seq
    │   │   └── SequenceGap        the mempool holds nothing just before it: send that first
    │   ├── ExpiredTransaction     its expiry height is below the block height
    │   ├── FeeTooLow              its fee is below the genesis minimum fee
    │   ├── InsufficientFunds      balance, stake or escrow too small for the amount
    │   ├── NotAuthorized          sender may not do this (not a coordinator, not owner…)
    │   ├── EscrowError            escrow rule broken (unknown job, closed, too early…)
    │   ├── BadEvidence            claim or slash evidence does not prove what it must
    │   ├── MempoolRejected        refused by the mempool (duplicate, full, fee too low)
    │   └── InvariantBroken        its producer refused it: applied, it breaks an invariant
    ├── BlockRejected              a block is invalid and was rejected whole
    └── StoreError                 the on-disk ledger is unusable
        └── ChainVerificationError replaying the stored chain disagrees with the store

Each message says what is wrong and, where it helps, what to do about it. A
:class:`TransactionRejected` carries a short machine-readable ``code``.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Root of every error the ledger raises on purpose."""


class GenesisError(LedgerError):
    """The genesis document is invalid; fix the genesis file and restart."""


class TransactionRejected(LedgerError):
    """A transaction is invalid against the state it was applied to."""

    code = "rejected"


class MalformedTransaction(TransactionRejected):
    """The transaction cannot be decoded, has a bad signature, or is for another chain."""

    code = "malformed"


class SequenceError(TransactionRejected):
    """The sequence number was already used (a replay) or skips ahead."""

    code = "bad_seq"


class SequenceGap(SequenceError):
    """The mempool refused a sequence number with a hole before it (the sender's next, or
    one past its last pending, was not there yet): submit it again once those are in."""

    code = "seq_gap"
    #: Every such refusal's text holds this (a refusal crosses the wire as text only).
    TEXT = "leaves a gap"


class ExpiredTransaction(TransactionRejected):
    """The transaction's expiry height has passed."""

    code = "expired"


class FeeTooLow(TransactionRejected):
    """The fee is below the chain's minimum fee."""

    code = "fee_too_low"


class InsufficientFunds(TransactionRejected):
    """The balance, stake or escrow cannot cover the amount plus fee."""

    code = "insufficient_funds"


class NotAuthorized(TransactionRejected):
    """The sender may not perform this transaction."""

    code = "not_authorized"


class EscrowError(TransactionRejected):
    """The escrow does not exist, is closed, or the rule's height window is not met."""

    code = "escrow"


class BadEvidence(TransactionRejected):
    """Evidence attached to a claim or slash does not prove what it must."""

    code = "bad_evidence"


class MempoolRejected(TransactionRejected):
    """The mempool refused the transaction (duplicate, full, or fee below the minimum)."""

    code = "mempool"


class InvariantBroken(TransactionRejected):
    """The block producer refused the transaction: applied, it breaks a ledger invariant,
    so every replica would refuse the block (``produce_block``). A fault in the rules,
    not the sender's."""

    code = "invariant_broken"
    #: How its message begins.
    TEXT = (
        "the block producer refused it: applied, it breaks a ledger invariant "
        "(a fault in the ledger's rules, not the sender's)"
    )


class BlockRejected(LedgerError):
    """A block is invalid; it was rejected whole and the state is unchanged.

    ``height`` is the block's claimed height (or None if undecodable), ``index`` the
    position of the offending transaction (None for header faults) and ``cause`` the
    underlying transaction rejection, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        height: int | None = None,
        index: int | None = None,
        cause: TransactionRejected | None = None,
    ) -> None:
        super().__init__(message)
        self.height = height
        self.index = index
        self.cause = cause


class StoreError(LedgerError):
    """The on-disk ledger is unusable (wrong chain, corrupt, or unreadable)."""


class ChainVerificationError(StoreError):
    """Replaying the stored chain from genesis disagrees with the stored state."""
