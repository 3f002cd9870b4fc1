"""NVIDIA GPUs through NVML (the ``pynvml`` module of nvidia-ml-py).

A missing package, library or driver, or a machine without a GPU, is reported as "no GPU"
with the reason; this never raises.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """One GPU as NVML sees it."""

    index: int
    name: str
    uuid: str
    memory_total_bytes: int
    memory_free_bytes: int
    cuda_capability: str


@dataclass(frozen=True, slots=True)
class GpuReport:
    """The ``gpu`` section of the probe (see specs/probe.md)."""

    available: bool
    reason: str | None
    driver_version: str | None
    cuda_driver_version: str | None
    devices: list[GpuDevice] = field(default_factory=list)


def format_cuda_version(value: int) -> str:
    """NVML's CUDA driver version integer (12040) as ``"12.4"``."""
    return f"{value // 1000}.{value % 1000 // 10}"


def _reason(nvml: Any, exc: Exception) -> str:
    if isinstance(exc, nvml.NVMLError_LibraryNotFound):
        return "no NVIDIA driver: the NVML library (libnvidia-ml.so.1) was not found"
    if isinstance(exc, nvml.NVMLError_DriverNotLoaded):
        return "the NVIDIA driver is installed but not loaded"
    if isinstance(exc, nvml.NVMLError_NoPermission):
        return "no permission to query the NVIDIA driver"
    return f"NVML failed: {exc}"


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _device(nvml: Any, index: int) -> GpuDevice:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
    return GpuDevice(
        index=index,
        name=_text(nvml.nvmlDeviceGetName(handle)),
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        memory_total_bytes=int(memory.total),
        memory_free_bytes=int(memory.free),
        cuda_capability=f"{int(major)}.{int(minor)}",
    )


def probe_gpus() -> GpuReport:
    """The NVIDIA GPUs of this machine, or "no GPU" and why."""
    try:
        import pynvml as nvml
    except ImportError:
        return GpuReport(
            False, "nvidia-ml-py is not installed (pip install nvidia-ml-py)", None, None
        )
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return GpuReport(False, _reason(nvml, exc), None, None)
    try:
        try:
            driver: str | None = _text(nvml.nvmlSystemGetDriverVersion())
            cuda: str | None = format_cuda_version(int(nvml.nvmlSystemGetCudaDriverVersion_v2()))
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as exc:
            return GpuReport(False, _reason(nvml, exc), None, None)
        devices: list[GpuDevice] = []
        problems: list[str] = []
        for index in range(min(count, 64)):
            try:
                devices.append(_device(nvml, index))
            except nvml.NVMLError as exc:
                problems.append(f"GPU {index}: {_reason(nvml, exc)}")
        if count == 0:
            problems.append("the NVIDIA driver reports no GPU")
        reason = "; ".join(problems) or None
        return GpuReport(bool(devices), reason, driver, cuda, devices)
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()
