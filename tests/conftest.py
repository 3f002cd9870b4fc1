"""Settings for the whole suite.

Hypothesis' per-example deadline is a wall-clock assertion: on a loaded 2-core machine a
correct example can take longer than 200 ms, and the test fails for the machine's sake,
not the code's. The suite asserts behaviour, never time, so the deadline is off.
"""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("suite", deadline=None)
settings.load_profile("suite")
