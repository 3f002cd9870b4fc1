"""What a contributor offers: from the hardware probe and the sandbox's layers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import protocol
from protocol import OPT_LEVELS, GpuInfo, provider_classes
from sandbox import Sandbox
from scheduler import run_key

if TYPE_CHECKING:
    from ..probe import ProbeReport


#: A cold TorchScript worker imports torch before it runs (2-3 s on a laptop core); bids
#: promise that much more, so that the replica's deadline holds for a cold run.
TORCH_START_MS = 4_000


@dataclass(frozen=True, slots=True)
class ProviderProfile:
    """What a contributor offers, from the hardware probe and the sandbox."""

    determinism_class: str
    #: The class of each way it runs a job (:func:`scheduler.run_key`); see
    #: :func:`run_classes`.
    determinism_classes: Mapping[str, str] = field(default_factory=dict)
    #: What a cold worker of each runtime adds to a run (see :data:`TORCH_START_MS`).
    start_ms: Mapping[str, int] = field(default_factory=dict)
    memory_mb: int = 4096
    cpu_cores: int = 1
    bench_score: int = 1000
    execution_providers: tuple[str, ...] = ("CPUExecutionProvider",)
    runtimes: tuple[str, ...] = ("onnx",)
    gpus: tuple[GpuInfo, ...] = ()
    sandbox_layers: tuple[str, ...] = ()

    @property
    def gpu_memory_mb(self) -> int:
        return max((g.memory_mb for g in self.gpus), default=0)

    def offered(self, *, memory_mb: int, use_gpu: bool) -> ProviderProfile:
        """What the owner lets jobs have of this machine: at most ``memory_mb`` of memory
        (0: all of it), and its GPUs only with ``use_gpu``."""
        memory = min(self.memory_mb, memory_mb) if memory_mb else self.memory_mb
        if use_gpu:
            return replace(self, memory_mb=memory)
        eps = tuple(p for p in self.execution_providers if p == "CPUExecutionProvider")
        cpu_runs = {k: c for k, c in self.determinism_classes.items() if "/CUDA" not in k}
        return replace(
            self,
            memory_mb=memory,
            gpus=(),
            execution_providers=eps or ("CPUExecutionProvider",),
            determinism_classes=cpu_runs,
        )

    def advertised_classes(self) -> tuple[str, ...]:
        """The determinism classes its runs can be in (at most 16, as an advert carries)."""
        every = {self.determinism_class, *self.determinism_classes.values()}
        return tuple(sorted(every))[:16]

    def classes(self) -> tuple[str, ...]:
        return provider_classes(
            runtimes=self.runtimes,
            execution_providers=self.execution_providers,
            memory_mb=self.memory_mb,
            gpu_memory_mb=self.gpu_memory_mb,
        )


def run_classes(runtimes: Iterable[str], execution_providers: Iterable[str]) -> dict[str, str]:
    """The determinism class of each way this machine runs a job: every runtime on every
    execution provider at every graph optimization level."""
    from sandbox import determinism_class

    eps = tuple(execution_providers)
    return {
        run_key(runtime, ep, opt): determinism_class(
            runtime, "cuda" if ep == "CUDAExecutionProvider" else "cpu", opt
        )
        for runtime in runtimes
        for ep in eps
        for opt in OPT_LEVELS
    }


def probe_profile(data_dir: Path, sandbox: Sandbox) -> ProviderProfile:
    """The contributor's offer from the hardware probe and the sandbox's layers."""
    from ..probe import run_probe

    report = run_probe(data_dir, benchmark=True)
    cpus = sandbox.config.worker_cpus
    return profile_from_report(report, sandbox.layers_in_use(), cpus=len(cpus) if cpus else None)


def profile_from_report(
    report: ProbeReport, layers: Iterable[str], *, cpus: int | None = None
) -> ProviderProfile:
    """What a probe report lets a contributor offer: ONNX on the execution providers that
    really worked (CPU, and CUDA when a GPU is present and its provider ran), TorchScript
    when torch is installed, and the GPUs NVML found."""
    from sandbox import determinism_class

    memory = report.memory.cgroup_limit_bytes or report.memory.total_bytes
    usable = ("CPUExecutionProvider", "CUDAExecutionProvider")
    eps = tuple(p for p in report.onnxruntime.working_providers if p in usable)
    gpus: tuple[protocol.GpuInfo, ...] = ()
    if report.gpu.available:
        gpus = tuple(
            protocol.GpuInfo(
                name=d.name[:128],
                memory_mb=d.memory_total_bytes >> 20,
                cuda_capability=d.cuda_capability[:16],
            )
            for d in report.gpu.devices[:16]
        )
    else:  # a CUDA provider without a GPU that NVML sees is not offered
        eps = tuple(p for p in eps if p != "CUDAExecutionProvider")
    runtimes = ("onnx", "torchscript") if report.torch.installed else ("onnx",)
    eps = eps or ("CPUExecutionProvider",)
    return ProviderProfile(
        determinism_class=determinism_class("onnx", "cpu", "extended"),
        determinism_classes=run_classes(runtimes, eps),
        start_ms={"torchscript": TORCH_START_MS} if report.torch.installed else {},
        memory_mb=max(1, memory // (1 << 20)),
        cpu_cores=min(report.cpu.usable_cores, cpus or report.cpu.usable_cores),
        bench_score=report.benchmark.score if report.benchmark else 1000,
        execution_providers=eps,
        runtimes=runtimes,
        gpus=gpus,
        sandbox_layers=tuple(layers),
    )
