"""Capability classes: a provider is found for exactly the jobs it can hold."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import CapabilityClassError, Requirements, job_class, provider_classes


def requirements(ep: str, memory_mb: int, device: str = "cpu") -> Requirements:
    return Requirements(
        device=device, execution_provider=ep, min_memory_mb=memory_mb, capability_class="x"
    )


def test_examples() -> None:
    assert job_class("onnx", requirements("CPUExecutionProvider", 3000)) == "onnx.cpu.m4"
    assert job_class("onnx", requirements("CUDAExecutionProvider", 100, "gpu")) == "onnx.cuda.m1"
    assert job_class("torchscript", requirements("CPUExecutionProvider", 9000)) == "torch.cpu.m16"
    assert job_class("onnx", requirements("CPUExecutionProvider", 10**6)) == "onnx.cpu.m64"
    assert provider_classes(
        runtimes=["onnx"], execution_providers=["CPUExecutionProvider"], memory_mb=4096
    ) == ("onnx.cpu.m1", "onnx.cpu.m2", "onnx.cpu.m4")
    assert "torch.cuda.m8" in provider_classes(
        runtimes=["torchscript"], execution_providers=[], memory_mb=2048, gpu_memory_mb=8192
    )


def test_unknown_names_are_clear_errors() -> None:
    with pytest.raises(CapabilityClassError, match="execution provider"):
        job_class("onnx", requirements("TensorrtExecutionProvider", 10))
    with pytest.raises(CapabilityClassError, match="runtime"):
        provider_classes(runtimes=["tflite"], execution_providers=[], memory_mb=1024)


@settings(max_examples=200)
@given(
    job_mb=st.integers(0, 80_000),
    provider_mb=st.integers(0, 80_000),
    ep=st.sampled_from(["CPUExecutionProvider", "CUDAExecutionProvider"]),
)
def test_provider_serves_job_class_iff_tier_fits(job_mb: int, provider_mb: int, ep: str) -> None:
    cls = job_class("onnx", requirements(ep, job_mb, "gpu" if "CUDA" in ep else "cpu"))
    served = provider_classes(
        runtimes=["onnx"],
        execution_providers=["CPUExecutionProvider", "CUDAExecutionProvider"],
        memory_mb=provider_mb,
        gpu_memory_mb=provider_mb,
    )
    tier_mb = int(cls.rsplit(".m", 1)[1]) * 1024
    assert (cls in served) == (provider_mb >= tier_mb)
    if cls in served and job_mb <= 64 * 1024:
        assert provider_mb >= job_mb
