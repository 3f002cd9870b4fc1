"""The CPU: model, usable cores, the instruction-set flags that decide which kernels run.

Parsing (``parse_*``) is pure and takes the text of /proc/cpuinfo or a cgroup file; the
``read_*`` functions do the I/O.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from sandbox import (  # the sandbox owns these: they are in determinism classes
    architecture_name,
    isa_level,
)

from ._sysfs import read_cgroup_files, read_text

# Flags that change which ONNX Runtime (MLAS) kernels run, so possibly the bits of a result.
X86_FLAGS = (
    "sse2",
    "ssse3",
    "sse4_1",
    "sse4_2",
    "avx",
    "f16c",
    "fma",
    "avx2",
    "avx_vnni",
    "avx512f",
    "avx512dq",
    "avx512cd",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
# On Arm the kernel says "asimd" (AArch64) or "neon" (AArch32) for the same unit: we say neon.
ARM_FLAGS = ("neon", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2")
_ARM_ALIASES = {"asimd": "neon"}

# CPU implementer and part numbers of common Arm cores (as in util-linux's lscpu).
_ARM_IMPLEMENTERS = {
    0x41: "ARM",
    0x42: "Broadcom",
    0x48: "HiSilicon",
    0x4E: "NVIDIA",
    0x51: "Qualcomm",
    0x61: "Apple",
    0xC0: "Ampere",
}
_ARM_PARTS = {
    (0x41, 0xD03): "Cortex-A53",
    (0x41, 0xD04): "Cortex-A35",
    (0x41, 0xD05): "Cortex-A55",
    (0x41, 0xD07): "Cortex-A57",
    (0x41, 0xD08): "Cortex-A72",
    (0x41, 0xD09): "Cortex-A73",
    (0x41, 0xD0A): "Cortex-A75",
    (0x41, 0xD0B): "Cortex-A76",
    (0x41, 0xD0C): "Neoverse-N1",
    (0x41, 0xD0D): "Cortex-A77",
    (0x41, 0xD40): "Neoverse-V1",
    (0x41, 0xD41): "Cortex-A78",
    (0x41, 0xD44): "Cortex-X1",
    (0x41, 0xD46): "Cortex-A510",
    (0x41, 0xD47): "Cortex-A710",
    (0x41, 0xD48): "Cortex-X2",
    (0x41, 0xD49): "Neoverse-N2",
    (0x41, 0xD4F): "Neoverse-V2",
    (0x41, 0xD80): "Cortex-A520",
    (0x41, 0xD81): "Cortex-A720",
    (0x41, 0xD82): "Cortex-X4",
    (0xC0, 0xAC3): "Ampere-1",
    (0xC0, 0xAC4): "Ampere-1a",
}


@dataclass(frozen=True, slots=True)
class CpuInfo:
    """What /proc/cpuinfo says, reduced to what a scheduler cares about."""

    model: str
    architecture: str
    logical_cores: int
    flags: tuple[str, ...]
    isa: str


@dataclass(frozen=True, slots=True)
class CpuReport:
    """The ``cpu`` section of the probe (see specs/probe.md)."""

    model: str
    architecture: str
    logical_cores: int
    usable_cores: int
    quota_millicores: int | None
    flags: list[str]
    isa: str


def normalize_architecture(machine: str) -> str:
    """``platform.machine()`` spelled one way: x86_64, aarch64, arm, or as given (the
    sandbox's spelling, which its determinism classes use)."""
    return architecture_name(machine)


def _blocks(text: str) -> list[dict[str, str]]:
    """The ``key : value`` blocks of /proc/cpuinfo, separated by blank lines."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current.setdefault(key.strip().lower(), value.strip())
    if current:
        blocks.append(current)
    return blocks


def _int(text: str) -> int | None:
    try:
        return int(text, 0)
    except ValueError:
        return None


def _arm_model(block: dict[str, str]) -> str | None:
    implementer = _int(block.get("cpu implementer", ""))
    part = _int(block.get("cpu part", ""))
    if implementer is None or part is None:
        return None
    name = _ARM_PARTS.get((implementer, part))
    if name is not None:
        return name
    vendor = _ARM_IMPLEMENTERS.get(implementer, f"implementer 0x{implementer:02x}")
    return f"{vendor} part 0x{part:03x}"


def parse_cpuinfo(text: str, architecture: str) -> CpuInfo:
    """Model, core count and determinism-relevant flags from the text of /proc/cpuinfo.

    ``architecture`` is :func:`normalize_architecture` of ``platform.machine()``. The flags
    are those every listed processor has (big.LITTLE cores may differ), in a fixed order.
    """
    arch = normalize_architecture(architecture)
    blocks = _blocks(text)
    processors = [b for b in blocks if "processor" in b] or blocks[:1]
    every: set[str] | None = None
    models: list[str] = []
    for block in processors:
        raw = block.get("flags", block.get("features", ""))
        names = {_ARM_ALIASES.get(name, name) for name in raw.lower().split()}
        every = names if every is None else every & names
        model = block.get("model name") or block.get("cpu model") or _arm_model(block)
        if model and model not in models:
            models.append(model)
    # Board names (Raspberry Pi and other device-tree systems) sit in a trailing block.
    board = next((b["model"] for b in blocks if "processor" not in b and "model" in b), None)
    hardware = next((b["hardware"] for b in blocks if "hardware" in b), None)
    model = " + ".join(models) or hardware or "unknown"
    if board:
        model = f"{model} ({board})"
    known = X86_FLAGS if arch == "x86_64" else ARM_FLAGS
    flags = tuple(name for name in known if name in (every or set()))
    if arch == "aarch64" and "neon" not in flags:
        flags = ("neon", *flags)  # mandatory in AArch64, even where the kernel omits it
    return CpuInfo(
        model=" ".join(model.split()),
        architecture=arch,
        logical_cores=len(processors) if any("processor" in b for b in blocks) else 0,
        flags=flags,
        isa=isa_level(arch, flags),
    )


def parse_cgroup_cpu_max(text: str) -> int | None:
    """A cgroup v2 ``cpu.max`` (``"200000 100000"`` or ``"max 100000"``) in millicores."""
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    try:
        quota = int(parts[0])
        period = int(parts[1]) if len(parts) > 1 else 100_000
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, quota * 1000 // period)


def parse_cgroup_v1_cpu_quota(quota_us: str, period_us: str) -> int | None:
    """cgroup v1 ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us`` in millicores (-1: none)."""
    return parse_cgroup_cpu_max(f"{quota_us.strip()} {period_us.strip()}")


def read_cpu_quota() -> int | None:
    """The smallest CPU quota over this process's cgroups (v2, else v1), in millicores."""
    quotas = [parse_cgroup_cpu_max(text) for text in read_cgroup_files("cpu.max")]
    v1 = zip(
        read_cgroup_files("cpu.cfs_quota_us", "cpu"),
        read_cgroup_files("cpu.cfs_period_us", "cpu"),
        strict=False,
    )
    quotas += [parse_cgroup_v1_cpu_quota(q, p) for q, p in v1]
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def read_cpu() -> CpuReport:
    """Probe this machine's CPU."""
    arch = normalize_architecture(platform.machine())
    info = parse_cpuinfo(read_text(Path("/proc/cpuinfo")) or "", arch)
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    model = info.model
    if model == "unknown":
        model = platform.processor() or "unknown"
    return CpuReport(
        model=model,
        architecture=info.architecture,
        logical_cores=info.logical_cores or os.cpu_count() or usable,
        usable_cores=usable,
        quota_millicores=read_cpu_quota(),
        flags=list(info.flags),
        isa=info.isa,
    )
