"""A pytest plugin for scripts/mutate.py: which test runs which line of one module.

Loaded with ``-p mutate_trace`` (scripts/ on ``PYTHONPATH``). ``AIMX_TRACE_FILE`` names the
module's file (absolute); ``AIMX_TRACE_OUT`` is where the map ``{test id: {"lines": [...],
"seconds": s, "failed": bool}}`` is written as JSON when the session ends. Only frames of
that one file are traced line by line; every other frame costs one call event.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Generator
from types import FrameType
from typing import Any

import pytest

_TARGET = os.path.realpath(os.environ.get("AIMX_TRACE_FILE", ""))
_OUT = os.environ.get("AIMX_TRACE_OUT", "")
_lines: set[int] = set()
_seen: dict[str, bool] = {}  # code file name -> is it the target
_runs: dict[str, dict[str, Any]] = {}

Tracer = Any  # sys.settrace's callback type is not spelled in typeshed's public names


def _local(frame: FrameType, event: str, arg: object) -> Tracer:
    if event == "line":
        _lines.add(frame.f_lineno)
    return _local


def _global(frame: FrameType, event: str, arg: object) -> Tracer:
    name = frame.f_code.co_filename
    hit = _seen.get(name)
    if hit is None:
        hit = _seen[name] = os.path.realpath(name) == _TARGET
    if not hit:
        return None
    _lines.add(frame.f_lineno)
    return _local


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    _lines.clear()
    started = time.perf_counter()
    threading.settrace(_global)
    sys.settrace(_global)
    try:
        yield
    finally:
        sys.settrace(None)
        threading.settrace(None)
        run = _runs.setdefault(item.nodeid, {"failed": False})
        run["lines"] = sorted(_lines)
        run["seconds"] = time.perf_counter() - started


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed:
        _runs.setdefault(report.nodeid, {"failed": False})["failed"] = True


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _OUT:
        with open(_OUT, "w") as out:
            json.dump(_runs, out)
