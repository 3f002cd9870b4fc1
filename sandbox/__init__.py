"""The sandbox: admission checks for models and inputs, isolated workers, ONNX and Torch
runners, resource accounting and output comparison. See specs/sandbox.md.

``Sandbox(config).run(JobRequest(...)) -> Outcome`` blocks until the job ends; from trio use
``await trio.to_thread.run_sync(sandbox.run, job)``. A caller that only runs jobs takes a
:class:`JobRunner` (that ``run``); :mod:`sandbox.testing` has runners for tests.

The package imports its parts on first use (PEP 562): ``import sandbox`` is cheap, so a
worker, or ``node.probe`` (which uses :func:`isa_level`), loads only what it needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._admission import AdmissionLimits as AdmissionLimits
    from ._admission import ModelInfo as ModelInfo
    from ._admission import TensorInfo as TensorInfo
    from ._admission import check_inputs as check_inputs
    from ._admission import check_model as check_model
    from ._cancel import RunCancel as RunCancel
    from ._config import SandboxConfig as SandboxConfig
    from ._determinism import cpu_isa as cpu_isa
    from ._determinism import determinism_class as determinism_class
    from ._errors import AdmissionError as AdmissionError
    from ._errors import InputError as InputError
    from ._errors import RunCancelled as RunCancelled
    from ._errors import SandboxConfigError as SandboxConfigError
    from ._errors import SandboxError as SandboxError
    from ._errors import UntrustedJobRefused as UntrustedJobRefused
    from ._errors import WorkerProtocolError as WorkerProtocolError
    from ._isa import architecture_name as architecture_name
    from ._isa import isa_level as isa_level
    from ._job import JobRequest as JobRequest
    from ._job import Limits as Limits
    from ._job import Outcome as Outcome
    from ._layers import Layer as Layer
    from ._layers import probe_layers as probe_layers
    from ._models import tiny_model_path as tiny_model_path
    from ._procfs import pid_alive as pid_alive
    from ._procfs import set_undumpable as set_undumpable
    from ._runner import JobRunner as JobRunner
    from ._sandbox import Sandbox as Sandbox
    from ._tensors import Comparison as Comparison
    from ._tensors import compare_outputs as compare_outputs
    from ._tensors import output_commitment as output_commitment

_EXPORTS = {
    "AdmissionLimits": "_admission",
    "ModelInfo": "_admission",
    "TensorInfo": "_admission",
    "check_inputs": "_admission",
    "check_model": "_admission",
    "cpu_isa": "_determinism",
    "determinism_class": "_determinism",
    "AdmissionError": "_errors",
    "isa_level": "_isa",
    "architecture_name": "_isa",
    "InputError": "_errors",
    "SandboxConfigError": "_errors",
    "SandboxError": "_errors",
    "UntrustedJobRefused": "_errors",
    "WorkerProtocolError": "_errors",
    "Layer": "_layers",
    "probe_layers": "_layers",
    "tiny_model_path": "_models",
    "pid_alive": "_procfs",
    "set_undumpable": "_procfs",
    "JobRunner": "_runner",
    "JobRequest": "_job",
    "Limits": "_job",
    "Outcome": "_job",
    "Sandbox": "_sandbox",
    "SandboxConfig": "_config",
    "RunCancel": "_cancel",
    "RunCancelled": "_errors",
    "Comparison": "_tensors",
    "compare_outputs": "_tensors",
    "output_commitment": "_tensors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
