"""Determinism classes: runtime and version, device, CPU instruction set, optimization level.

Two runs in one class must give bit-identical outputs; across classes results are compared
within the job's tolerance. Example: ``ort-1.32.0/cpu/avx512/extended``.
"""

from __future__ import annotations

import platform
import re
from functools import cache

_UNSAFE = re.compile(r"[^A-Za-z0-9_.:\-]")


@cache
def cpu_isa() -> str:
    """The widest vector instruction set the runtimes' kernels may dispatch to here."""
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return "neon"
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        return machine or "unknown"
    for isa in ("avx512f", "avx2", "avx", "sse4_1"):
        if isa in flags:
            return isa.replace("avx512f", "avx512").replace("sse4_1", "sse4")
    return machine or "unknown"


def _clean(part: str) -> str:
    return _UNSAFE.sub("_", part)


def runtime_version(runtime: str) -> str:
    if runtime == "onnx":
        import onnxruntime

        return f"ort-{onnxruntime.__version__}"
    if runtime == "torchscript":
        import torch

        return f"torch-{torch.__version__}"
    return runtime


def determinism_class(runtime: str, device: str, opt_level: str) -> str:
    """``<runtime-version>/<device>/<isa>/<opt-level>``, safe for the wire's Name pattern."""
    isa = cpu_isa() if device == "cpu" else device
    opt = opt_level if runtime == "onnx" else "jit"
    return "/".join(_clean(p) for p in (runtime_version(runtime), device, isa, opt))
