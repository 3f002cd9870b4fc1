"""The whole probe: every section, the determinism class, and the JSON form.

The JSON keys are stable and documented in specs/probe.md (a test checks that the two agree).
"""

from __future__ import annotations

import dataclasses
import importlib
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._benchmark import BenchmarkReport, run_benchmark
from ._cpu import CpuReport, read_cpu
from ._disk import DiskReport, read_disk
from ._gpu import GpuReport, probe_gpus
from ._memory import MemoryReport, read_memory
from ._runtimes import OnnxRuntimeReport, TorchReport, probe_onnxruntime, probe_torch

SCHEMA = "aimx-probe/1"
# Jobs pin ONNX Runtime's graph optimization level EXTENDED (level ALL changed conv outputs).
OPTIMIZATION_LEVEL = "extended"


@dataclass(frozen=True, slots=True)
class HostReport:
    """The ``host`` section: operating system and Python."""

    os: str
    kernel: str
    python: str


@dataclass(frozen=True, slots=True)
class ProbeReport:
    """Everything ``aimx node probe`` finds out about this machine."""

    schema: str
    probed_at_ms: int
    probe_ms: int
    host: HostReport
    cpu: CpuReport
    memory: MemoryReport
    disk: DiskReport
    gpu: GpuReport
    onnxruntime: OnnxRuntimeReport
    torch: TorchReport
    benchmark: BenchmarkReport | None
    determinism_class: str | None

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data with the keys of specs/probe.md."""
        return dataclasses.asdict(self)


def determinism_class(
    ort_version: str, isa: str, provider: str = "cpu", level: str = OPTIMIZATION_LEVEL
) -> str:
    """``ort-<version>/<provider>/<isa>/<level>``, e.g. ``ort-1.32.0/cpu/avx2/extended``."""
    return f"ort-{ort_version}/{provider}/{isa}/{level}"


def run_probe(data_dir: Path, *, import_torch: bool = False, benchmark: bool = True) -> ProbeReport:
    """Probe this machine. ``import_torch`` checks CUDA through torch (costs seconds);
    ``benchmark=False`` skips the timed workload (the section is then null)."""
    started = time.perf_counter_ns()
    probed_at_ms = time.time_ns() // 1_000_000
    cpu = read_cpu()
    gpu = probe_gpus()
    ort = probe_onnxruntime(check_cuda=gpu.available)
    bench = run_benchmark(cpu.usable_cores) if benchmark else None
    torch = probe_torch(import_torch=import_torch)
    memory = read_memory()
    disk = read_disk(data_dir)
    klass = None
    if ort.version and "CPUExecutionProvider" in ort.working_providers:
        klass = _canonical_class(ort.version, cpu.isa)
    uname = platform.uname()
    return ProbeReport(
        schema=SCHEMA,
        probed_at_ms=probed_at_ms,
        probe_ms=(time.perf_counter_ns() - started) // 1_000_000,
        host=HostReport(uname.system, uname.release, platform.python_version()),
        cpu=cpu,
        memory=memory,
        disk=disk,
        gpu=gpu,
        onnxruntime=ort,
        torch=torch,
        benchmark=bench,
        determinism_class=klass,
    )


def _canonical_class(ort_version: str, isa: str) -> str:
    """The sandbox's determinism class for ONNX on this CPU, when the sandbox exports one
    (it owns the definition); else :func:`determinism_class` with the probe's ISA level."""
    try:
        sandbox_class = getattr(importlib.import_module("sandbox"), "determinism_class", None)
        if sandbox_class is not None:
            return str(sandbox_class("onnx", "cpu", OPTIMIZATION_LEVEL))
    except Exception:  # best effort: the sandbox may not import here (a bare GPU machine)
        pass
    return determinism_class(ort_version, isa)
