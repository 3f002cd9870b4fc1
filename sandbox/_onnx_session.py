"""The onnxruntime session a job's model runs in, made one way wherever a model runs (the
worker, and :class:`sandbox.testing.InProcessRunner`): the same options give the same
outputs, bit for bit, within one determinism class.

Imports onnxruntime only when called: the worker imports it after its resource limits.
"""

from __future__ import annotations

from typing import Any

#: The job's ``graph_opt_level`` -> onnxruntime's ``GraphOptimizationLevel`` member.
GRAPH_OPT_LEVELS = {
    "disabled": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def open_session(model: bytes, *, opt_level: str, threads: int, provider: str) -> Any:
    """An ``onnxruntime.InferenceSession`` of ``model``: ``threads`` intra-op threads, one
    inter-op, sequential; the model's own session config ignored; CUDA only when asked for
    and available, the CPU otherwise."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPT_LEVELS[opt_level])
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.load_config_from_model", "0")
    opts.add_session_config_entry("session.use_env_allocators", "0")
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if provider == "CUDAExecutionProvider" and (
        "CUDAExecutionProvider" in ort.get_available_providers()
    ):
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ort.InferenceSession(model, sess_options=opts, providers=providers)


def session_device(session: Any) -> str:
    """``"cuda"`` if the session runs on CUDA, else ``"cpu"``."""
    used = session.get_providers()
    return "cuda" if used and used[0] == "CUDAExecutionProvider" else "cpu"
