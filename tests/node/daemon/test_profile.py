"""What a contributor offers, from a real probe report of this machine (and the same report
with a GPU whose CUDA provider worked)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from node.daemon import profile_from_report
from node.probe import run_probe
from node.probe._gpu import GpuDevice


def test_offer_follows_the_probe(tmp_path: Path) -> None:
    report = run_probe(tmp_path, benchmark=False)
    profile = profile_from_report(report, ["seccomp"])
    assert "CPUExecutionProvider" in profile.execution_providers
    assert any(c.startswith("onnx.cpu.") for c in profile.classes())
    if report.torch.installed:  # CI installs the torch extra
        assert "torchscript" in profile.runtimes
        assert any(c.startswith("torch.cpu.") for c in profile.classes())
    if not report.gpu.available:
        assert profile.gpus == () and not any(".cuda." in c for c in profile.classes())


def test_a_gpu_with_a_working_cuda_provider_is_offered(tmp_path: Path) -> None:
    report = run_probe(tmp_path, benchmark=False)
    gpu = GpuDevice(0, "NVIDIA H100", "GPU-0", 80 << 30, 70 << 30, "9.0")
    with_gpu = dataclasses.replace(
        report,
        gpu=dataclasses.replace(report.gpu, available=True, reason=None, devices=[gpu]),
        onnxruntime=dataclasses.replace(
            report.onnxruntime, working_providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
        ),
    )
    profile = profile_from_report(with_gpu, [])
    assert profile.gpu_memory_mb == 80 << 10
    assert "CUDAExecutionProvider" in profile.execution_providers
    assert any(c.startswith("onnx.cuda.") for c in profile.classes())
    # The CUDA provider is not offered when NVML sees no GPU.
    no_gpu = dataclasses.replace(with_gpu, gpu=report.gpu)
    if not report.gpu.available:
        assert "CUDAExecutionProvider" not in profile_from_report(no_gpu, []).execution_providers


def test_job_cpus_bound_the_cores_offered(tmp_path: Path) -> None:
    report = run_probe(tmp_path, benchmark=False)
    assert profile_from_report(report, [], cpus=1).cpu_cores == 1
    assert profile_from_report(report, []).cpu_cores == report.cpu.usable_cores
