"""Capability classes: the keys providers advertise under and jobs are announced on.

A class is ``<runtime>.<accelerator>.m<tier>`` (specs/network.md, "Capability classes"):

- runtime: ``onnx`` or ``torch`` (a JobSpec's ``torchscript``);
- accelerator: ``cpu`` or ``cuda`` (from the ONNX Runtime execution provider, or the job's
  device for TorchScript);
- memory tier: the memory a job may use, in GiB, rounded up to a power of two from 1 to
  64 (``m1`` ... ``m64``); for ``cuda`` it is GPU memory. A provider serves every tier up
  to its own memory rounded down, so a job's tier finds every provider with enough memory.

These are wire rules: a job is announced on the topic of its class and a provider is found
under the classes it serves, so every node must compute the same classes from the same
inputs. They are pure functions.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._errors import LocalProtocolError
from ._messages import Requirements

MEMORY_TIERS_GIB = (1, 2, 4, 8, 16, 32, 64)
RUNTIME_NAMES = {"onnx": "onnx", "torchscript": "torch", "torch": "torch"}
ACCELERATORS = {
    "CPUExecutionProvider": "cpu",
    "CUDAExecutionProvider": "cuda",
    "cpu": "cpu",
    "cuda": "cuda",
    "gpu": "cuda",
}


class CapabilityClassError(LocalProtocolError):
    """A runtime or execution provider that has no capability class."""


def _runtime(name: str) -> str:
    try:
        return RUNTIME_NAMES[name]
    except KeyError:
        raise CapabilityClassError(
            f"unknown runtime {name!r}: use one of {sorted(RUNTIME_NAMES)}"
        ) from None


def _accelerator(name: str) -> str:
    try:
        return ACCELERATORS[name]
    except KeyError:
        raise CapabilityClassError(
            f"execution provider {name!r} has no capability class: use one of "
            f"{sorted(ACCELERATORS)}"
        ) from None


def memory_tier_for_job(min_memory_mb: int) -> int:
    """The smallest tier (GiB) that holds ``min_memory_mb``; 64 for anything larger."""
    for tier in MEMORY_TIERS_GIB:
        if min_memory_mb <= tier * 1024:
            return tier
    return MEMORY_TIERS_GIB[-1]


def memory_tiers_for_provider(memory_mb: int) -> tuple[int, ...]:
    """Every tier (GiB) a provider with ``memory_mb`` serves: those up to its memory."""
    return tuple(t for t in MEMORY_TIERS_GIB if t * 1024 <= memory_mb)


def capability_class(runtime: str, accelerator: str, tier_gib: int) -> str:
    if tier_gib not in MEMORY_TIERS_GIB:
        raise CapabilityClassError(f"memory tier must be one of {MEMORY_TIERS_GIB} GiB")
    return f"{_runtime(runtime)}.{_accelerator(accelerator)}.m{tier_gib}"


def job_class(runtime: str, requirements: Requirements) -> str:
    """The class a job is announced on, from its runtime and requirements."""
    if runtime == "onnx":
        accelerator = _accelerator(requirements.execution_provider)
    else:
        accelerator = _accelerator(requirements.device)
    return capability_class(runtime, accelerator, memory_tier_for_job(requirements.min_memory_mb))


def provider_classes(
    *,
    runtimes: Iterable[str],
    execution_providers: Iterable[str],
    memory_mb: int,
    gpu_memory_mb: int = 0,
) -> tuple[str, ...]:
    """Every class a provider serves, sorted, from what its probe found.

    ``execution_providers`` are ONNX Runtime's names (``CPUExecutionProvider``,
    ``CUDAExecutionProvider``); TorchScript serves ``cpu``, and ``cuda`` when a GPU with
    memory is present. Unknown execution providers are ignored (they have no class).
    """
    accelerators = {ACCELERATORS[ep] for ep in execution_providers if ep in ACCELERATORS}
    classes: set[str] = set()
    for runtime in {_runtime(r) for r in runtimes}:
        accs = set(accelerators) if runtime == "onnx" else {"cpu"}
        if runtime == "torch" and gpu_memory_mb > 0:
            accs.add("cuda")
        for acc in accs:
            memory = gpu_memory_mb if acc == "cuda" else memory_mb
            for tier in memory_tiers_for_provider(memory):
                classes.add(f"{runtime}.{acc}.m{tier}")
    return tuple(sorted(classes))
