"""Determinism classes: runtime and version, device, CPU instruction set, optimization level.

Two runs in one class must give bit-identical outputs; across classes results are compared
within the job's tolerance. Example: ``ort-1.32.0/cpu/avx512vnni/extended``.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
from functools import cache

from ._isa import architecture_name, cpuinfo_flags, isa_level

_UNSAFE = re.compile(r"[^A-Za-z0-9_.:\-]")


@cache
def cpu_isa() -> str:
    """This CPU's instruction-set level (:func:`sandbox.isa_level` of its flags)."""
    arch = architecture_name(platform.machine())
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = cpuinfo_flags(f.read())
    except OSError:
        flags = set()
    if arch == "aarch64":
        flags.add("neon")  # mandatory in AArch64, even where the kernel omits it
    return isa_level(arch, flags)


def _clean(part: str) -> str:
    return _UNSAFE.sub("_", part)


def runtime_version(runtime: str) -> str:
    if runtime == "onnx":
        import onnxruntime

        return f"ort-{onnxruntime.__version__}"
    if runtime == "torchscript":
        # From its metadata, as torch.__version__ reads it: a daemon naming the class of a
        # TorchScript run it would make need not import torch (seconds, hundreds of MB).
        try:
            return f"torch-{importlib.metadata.version('torch')}"
        except importlib.metadata.PackageNotFoundError:
            import torch

            return f"torch-{torch.__version__}"
    return runtime


def determinism_class(runtime: str, device: str, opt_level: str) -> str:
    """``<runtime-version>/<device>/<isa>/<opt-level>``, safe for the wire's Name pattern."""
    isa = cpu_isa() if device == "cpu" else device
    opt = opt_level if runtime == "onnx" else "jit"
    return "/".join(_clean(p) for p in (runtime_version(runtime), device, isa, opt))
