"""The runtimes jobs run on: onnxruntime and its execution providers, and torch.

``onnxruntime-gpu`` silently falls back to the CPU when the CUDA libraries are missing, so a
provider counts as working only when a session created with it alone lists it first in
``session.get_providers()`` and computes the tiny model's known answer.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._onnx_models import TINY_INPUT, tiny_expected, tiny_model

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# Listed by onnxruntime but not a place where a model's nodes run.
NOT_COMPUTE = {"AzureExecutionProvider": "sends requests to remote endpoints; nothing runs here"}


@dataclass(frozen=True, slots=True)
class ProviderCheck:
    """Whether one execution provider really ran the tiny model, and if not, why."""

    provider: str
    works: bool
    detail: str | None


@dataclass(frozen=True, slots=True)
class OnnxRuntimeReport:
    """The ``onnxruntime`` section of the probe (see specs/probe.md)."""

    installed: bool
    version: str | None
    available_providers: list[str] = field(default_factory=list)
    working_providers: list[str] = field(default_factory=list)
    checks: list[ProviderCheck] = field(default_factory=list)
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class TorchReport:
    """The ``torch`` section of the probe (see specs/probe.md)."""

    installed: bool
    version: str | None
    cuda_build: str | None
    imported: bool
    cuda_available: bool | None
    cuda_device_count: int | None
    reason: str | None = None


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else ""


def check_provider(ort: Any, provider: str) -> ProviderCheck:
    """Create a session on the tiny model with ``provider`` alone, run it, check the answer.

    onnxruntime reports a fallback through ``warnings`` and ``print``; both are captured for
    the reason, which swaps ``sys.stdout``/``sys.stderr`` for the few milliseconds of the
    check: run it at start-up, not while other threads write to them.
    """
    if provider in NOT_COMPUTE:
        return ProviderCheck(provider, False, NOT_COMPUTE[provider])
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the fallback warnings are reported below
    said = io.StringIO()
    with (
        warnings.catch_warnings(record=True) as caught,
        contextlib.redirect_stdout(said),
        contextlib.redirect_stderr(said),
    ):
        warnings.simplefilter("always")
        try:
            session = ort.InferenceSession(tiny_model(), options, providers=[provider])
            active = list(session.get_providers())
            output = session.run(None, {"X": TINY_INPUT})[0] if active[:1] == [provider] else None
        except Exception as exc:  # onnxruntime raises many unrelated types; all mean "no"
            return ProviderCheck(provider, False, f"failed: {_first_line(str(exc))}")
    if active[:1] != [provider]:
        notes = [_first_line(str(w.message)) for w in caught] + [_first_line(said.getvalue())]
        why = "; ".join(n for n in notes if n)
        return ProviderCheck(
            provider, False, f"fell back to {', '.join(active)}" + (f" ({why})" if why else "")
        )
    if output is None or not np.allclose(output, tiny_expected(), rtol=1e-3, atol=1e-3):
        return ProviderCheck(provider, False, "ran but computed a wrong answer")
    return ProviderCheck(provider, True, None)


def probe_onnxruntime(*, check_cuda: bool = False) -> OnnxRuntimeReport:
    """onnxruntime's version and which execution providers work.

    Every provider onnxruntime lists is checked; ``check_cuda`` also checks CUDA when it is
    not listed (what the probe does when NVML sees a GPU), to say why it cannot be used.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return OnnxRuntimeReport(False, None, reason=f"onnxruntime cannot be imported: {exc}")
    available = list(ort.get_available_providers())
    to_check = available + ([CUDA] if check_cuda and CUDA not in available else [])
    checks = [check_provider(ort, p) for p in to_check]
    if check_cuda and CUDA not in available:
        checks[-1] = ProviderCheck(
            CUDA,
            False,
            f"{checks[-1].detail}; this onnxruntime build has no CUDA provider: install "
            "onnxruntime-gpu (pip install 'aimatrix-node[gpu]')",
        )
    working = [c.provider for c in checks if c.works]
    return OnnxRuntimeReport(True, str(ort.__version__), available, working, checks)


_TORCH_BUILD = re.compile(r"^(cuda|hip)\s*(?::[^=]*)?=\s*(None|'([^']*)'|\"([^\"]*)\")", re.M)


def parse_torch_version_file(text: str) -> dict[str, str | None]:
    """``{"cuda": "12.4" | None, "hip": ...}`` from the text of torch/version.py."""
    found: dict[str, str | None] = {"cuda": None, "hip": None}
    for m in _TORCH_BUILD.finditer(text):
        found[m.group(1)] = m.group(3) if m.group(3) is not None else m.group(4)
    return found


def probe_torch(*, import_torch: bool = False) -> TorchReport:
    """torch's version and CUDA build from its metadata (fast), and, with ``import_torch``,
    whether CUDA really works (importing torch takes seconds)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return TorchReport(False, None, None, False, None, None, "torch is not installed")
    try:
        version: str | None = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        version = None
    try:
        text = (Path(spec.origin).parent / "version.py").read_text(encoding="utf-8")
        cuda_build = parse_torch_version_file(text)["cuda"]
    except OSError:
        cuda_build = None
    if not import_torch:
        return TorchReport(True, version, cuda_build, False, None, None)
    try:
        import torch

        available = bool(torch.cuda.is_available())
        count = int(torch.cuda.device_count()) if available else 0
        return TorchReport(True, str(torch.__version__), torch.version.cuda, True, available, count)
    except Exception as exc:  # a broken install raises anything at import time
        return TorchReport(
            True, version, cuda_build, False, None, None, f"torch failed: {_first_line(str(exc))}"
        )
