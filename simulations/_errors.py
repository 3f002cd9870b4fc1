"""The simulator's errors.

- :class:`SimulationError`: the root; its message says what happened and what to do.
  - :class:`ScenarioError`: a scenario file that cannot be read or is invalid (names the key).
"""

from __future__ import annotations


class SimulationError(Exception):
    """A simulation cannot run as asked."""


class ScenarioError(SimulationError):
    """The scenario file is unreadable or invalid; the message names the key."""
