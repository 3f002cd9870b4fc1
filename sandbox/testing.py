"""Test support: run a Python function inside a worker with exactly a real job's layers.

Used by the containment suite (tests/sandbox/test_containment.py) to show that hostile code
is stopped. The function is sent as source text and called with ``args`` (reprs of plain
values); nothing here is reachable from the network or from a job.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable

from ._sandbox import Limits, Outcome, Sandbox


def run_payload(
    sandbox: Sandbox, func: Callable[..., object], *args: object, limits: Limits | None = None
) -> Outcome:
    """Run ``func(*args)`` in a fresh worker of ``sandbox``; the outcome's ``value`` is the
    ``repr`` of what it returned."""
    source = textwrap.dedent(inspect.getsource(func))
    source += f"\n\ndef __aimx_entry():\n    return {func.__name__}(*{args!r})\n"
    return sandbox.run_python(source, "__aimx_entry", limits)
