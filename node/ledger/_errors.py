"""The ledger service's error."""

from __future__ import annotations

from .._errors import NodeError


class LedgerServiceError(NodeError):
    """The ledger service cannot do what was asked (no source to forward to, rejected tx)."""
