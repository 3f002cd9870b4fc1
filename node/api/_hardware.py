"""The machine's load as the dashboard shows it: CPU use (the machine's and the daemon's
own, from ``/proc/stat`` and the process's CPU time), memory, and per GPU its use, memory
and temperature from NVML ("no GPU" with NVML's reason where there is none).

Sampled only when a dashboard listens (once per tick for all of them); a sample is a
few small reads and NVML calls.
"""

from __future__ import annotations

import os
import time
from typing import Any

from .._procfs import machine_ticks


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                name, _, rest = line.partition(b":")
                if name in (b"MemTotal", b"MemAvailable"):
                    out[name.decode()] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


class Hardware:
    """Samples of the machine's load; the first sample's CPU shares read 0."""

    def __init__(self) -> None:
        self._last_stat = machine_ticks()
        self._last_cpu = time.process_time()
        self._last_wall = time.monotonic()
        self._nvml: Any = None
        self._gpus: list[Any] = []
        self.gpu_reason: str | None = None
        self._nvml_tried = False

    def _open_nvml(self) -> None:
        self._nvml_tried = True
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._gpus = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._nvml = pynvml
            if not self._gpus:
                self.gpu_reason = "NVML sees no GPU"
        except Exception as exc:  # no driver, no library: the node simply has no GPU
            self.gpu_reason = f"no NVIDIA driver: {exc}"[:200]

    def _gpu_view(self) -> list[dict[str, Any]]:
        nv = self._nvml
        out = []
        for i, handle in enumerate(self._gpus):
            gpu: dict[str, Any] = {"index": i}
            try:
                name = nv.nvmlDeviceGetName(handle)
                gpu["name"] = name.decode() if isinstance(name, bytes) else str(name)
                util = nv.nvmlDeviceGetUtilizationRates(handle)
                gpu["use_percent"] = int(util.gpu)
                mem = nv.nvmlDeviceGetMemoryInfo(handle)
                gpu["memory_used"] = int(mem.used)
                gpu["memory_total"] = int(mem.total)
                gpu["temperature_c"] = int(
                    nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU)
                )
            except Exception as exc:  # one query failing leaves the others shown
                gpu["error"] = str(exc)[:200]
            out.append(gpu)
        return out

    def sample(self) -> dict[str, Any]:
        if not self._nvml_tried:
            self._open_nvml()
        stat = machine_ticks()
        cpu_percent = 0.0
        if stat is not None and self._last_stat is not None:
            busy = stat[0] - self._last_stat[0]
            total = stat[1] - self._last_stat[1]
            cpu_percent = 100.0 * busy / total if total > 0 else 0.0
        self._last_stat = stat
        now_cpu, now_wall = time.process_time(), time.monotonic()
        wall = now_wall - self._last_wall
        daemon = 100.0 * (now_cpu - self._last_cpu) / wall if wall > 0 else 0.0
        self._last_cpu, self._last_wall = now_cpu, now_wall
        mem = _meminfo()
        return {
            "cpu_percent": round(cpu_percent, 1),
            "daemon_cpu_percent": round(daemon, 1),
            "cpus": os.cpu_count() or 1,
            "memory_total": mem.get("MemTotal"),
            "memory_available": mem.get("MemAvailable"),
            "gpus": self._gpu_view(),
            "gpu_reason": None if self._gpus else (self.gpu_reason or "no GPU"),
        }
