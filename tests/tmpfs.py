"""A small tmpfs for the tests that fill a disk (skipped where it cannot be mounted)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.testing import chaos


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``where``, unmounted after; the test is skipped without root
    or ``mount``."""
    with contextlib.ExitStack() as stack:
        try:
            mounted = stack.enter_context(chaos.tmpfs(where, size))
        except chaos.ChaosSkip as exc:
            pytest.skip(str(exc))
        yield mounted
