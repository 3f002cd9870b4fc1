"""The sandbox: admission checks for models and inputs, isolated workers, ONNX and Torch
runners, resource accounting and output comparison. See specs/sandbox.md.

``Sandbox(config).run(JobRequest(...)) -> Outcome`` blocks until the job ends; from trio use
``await trio.to_thread.run_sync(sandbox.run, job)``.
"""

from ._admission import AdmissionLimits as AdmissionLimits
from ._admission import ModelInfo as ModelInfo
from ._admission import TensorInfo as TensorInfo
from ._admission import check_inputs as check_inputs
from ._admission import check_model as check_model
from ._determinism import cpu_isa as cpu_isa
from ._determinism import determinism_class as determinism_class
from ._errors import AdmissionError as AdmissionError
from ._errors import InputError as InputError
from ._errors import SandboxConfigError as SandboxConfigError
from ._errors import SandboxError as SandboxError
from ._errors import UntrustedJobRefused as UntrustedJobRefused
from ._errors import WorkerProtocolError as WorkerProtocolError
from ._layers import Layer as Layer
from ._layers import probe_layers as probe_layers
from ._models import tiny_model_path as tiny_model_path
from ._sandbox import JobRequest as JobRequest
from ._sandbox import Limits as Limits
from ._sandbox import Outcome as Outcome
from ._sandbox import Sandbox as Sandbox
from ._sandbox import SandboxConfig as SandboxConfig
from ._tensors import Comparison as Comparison
from ._tensors import compare_outputs as compare_outputs
from ._tensors import output_commitment as output_commitment
