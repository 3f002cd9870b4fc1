"""CPU instruction-set levels: which of ONNX Runtime's (MLAS) CPU kernels can run here.

Pure: the level is a function of the architecture and the CPU flags. The sandbox puts it in
a run's determinism class; ``node.probe`` reports it (and reads the flags it is given).
"""

from __future__ import annotations

from collections.abc import Iterable

_AVX512_CORE = frozenset({"avx512f", "avx512dq", "avx512bw", "avx512vl"})


def isa_level(architecture: str, flags: Iterable[str]) -> str:
    """The coarsest instruction-set level that picks ONNX Runtime's CPU kernels.

    ``architecture`` is ``x86_64``, ``aarch64``, ``arm`` or anything else; ``flags`` the CPU
    flags every core has, as /proc/cpuinfo names them (``neon`` for Arm's Advanced SIMD).
    x86_64, best first: amx, avx512vnni, avx512, avx2vnni, avx2, avx, sse4_1, sse2.
    aarch64: i8mm, dotprod, neon. arm: neon, generic. Anything else: generic.
    """
    f = set(flags)
    if architecture == "x86_64":
        if f >= _AVX512_CORE and {"amx_tile", "amx_int8"} <= f:
            return "amx"
        if f >= _AVX512_CORE and "avx512_vnni" in f:
            return "avx512vnni"
        if f >= _AVX512_CORE:
            return "avx512"
        if {"avx2", "fma", "avx_vnni"} <= f:
            return "avx2vnni"
        if {"avx2", "fma"} <= f:
            return "avx2"
        if "avx" in f:
            return "avx"
        return "sse4_1" if "sse4_1" in f else "sse2"
    if architecture == "aarch64":
        if {"neon", "asimddp", "i8mm"} <= f:
            return "i8mm"
        if {"neon", "asimddp"} <= f:
            return "dotprod"
        return "neon"  # Advanced SIMD is mandatory in AArch64
    if architecture == "arm":
        return "neon" if "neon" in f else "generic"
    return "generic"


def architecture_name(machine: str) -> str:
    """``platform.machine()`` spelled one way: x86_64, aarch64, arm, or as given."""
    m = machine.lower()
    if m in ("x86_64", "amd64", "x64"):
        return "x86_64"
    if m in ("aarch64", "arm64", "armv8", "armv8l"):
        return "aarch64"
    if m.startswith("arm"):
        return "arm"
    return m


def cpuinfo_flags(text: str) -> set[str]:
    """The flags every processor listed in /proc/cpuinfo text has (``flags`` on x86,
    ``Features`` on Arm, where ``asimd`` is called ``neon``)."""
    common: set[str] | None = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            names = {"neon" if n == "asimd" else n for n in value.lower().split()}
            common = names if common is None else common & names
    return common or set()
