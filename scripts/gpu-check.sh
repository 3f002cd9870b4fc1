#!/usr/bin/env bash
# GPU check of the hardware probe, for a lent GPU machine (torch with CUDA, onnxruntime CPU,
# nvidia-ml-py, numpy; NOT our venv). Run from anywhere; it uses the repo root as PYTHONPATH:
#   scripts/gpu-check.sh            (PYTHON=... to pick the interpreter; default python3)
# It exercises the real NVML path and the provider-fallback check of node/probe, measures
# whether a model's CUDA runs in fresh sessions agree bit for bit, prints one JSON object,
# and exits 1 when a check fails. Takes a few seconds (torch import included).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" - <<'PY'
import dataclasses
import json
import re
import sys
import tempfile
from pathlib import Path

checks = []


def check(name, ok, detail=None):
    checks.append({"check": name, "ok": bool(ok), "detail": detail})


import onnxruntime as ort  # noqa: E402

from node.probe import check_provider, probe_gpus, probe_onnxruntime, probe_torch, run_probe  # noqa: E402

out = {"python": sys.version.split()[0], "onnxruntime": ort.__version__}

gpu = probe_gpus()
out["gpu"] = dataclasses.asdict(gpu)
check("nvml sees a GPU", gpu.available and gpu.devices, gpu.reason)
check("driver and CUDA driver versions", gpu.driver_version and gpu.cuda_driver_version)
for d in gpu.devices:
    check(
        f"GPU {d.index} fields",
        d.name and d.uuid.startswith(("GPU-", "MIG-")) and d.memory_total_bytes > 0
        and 0 <= d.memory_free_bytes <= d.memory_total_bytes
        and re.fullmatch(r"\d+\.\d+", d.cuda_capability),
        dataclasses.asdict(d),
    )

cuda_ep = check_provider(ort, "CUDAExecutionProvider")
out["cuda_provider_check"] = dataclasses.asdict(cuda_ep)
if "CUDAExecutionProvider" in ort.get_available_providers():
    check("CUDA EP listed and really runs", cuda_ep.works, cuda_ep.detail)
else:
    check(
        "CPU-only onnxruntime: the silent CUDA fallback is detected",
        not cuda_ep.works and "fell back to CPUExecutionProvider" in (cuda_ep.detail or ""),
        cuda_ep.detail,
    )
ort_report = probe_onnxruntime(check_cuda=gpu.available)
out["onnxruntime_report"] = dataclasses.asdict(ort_report)
cuda_checks = [c for c in ort_report.checks if c.provider == "CUDAExecutionProvider"]
check(
    "probe checks CUDA when NVML sees a GPU",
    cuda_checks and ("CUDAExecutionProvider" in ort_report.working_providers) == cuda_checks[0].works,
    [dataclasses.asdict(c) for c in cuda_checks],
)
check("CPU provider works", "CPUExecutionProvider" in ort_report.working_providers)

torch_report = probe_torch(import_torch=True)
out["torch"] = dataclasses.asdict(torch_report)
check(
    "torch sees CUDA",
    torch_report.cuda_available and torch_report.cuda_device_count,
    torch_report.reason,
)
if torch_report.cuda_available:
    import torch

    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    out["torch_device_names"] = names
    check(
        "torch and NVML agree on the first GPU's name",
        gpu.devices and names and names[0] == gpu.devices[0].name,
        {"torch": names, "nvml": [d.name for d in gpu.devices]},
    )

with tempfile.TemporaryDirectory() as tmp:
    report = run_probe(Path(tmp) / "data", import_torch=True)
data = json.loads(json.dumps(report.to_json()))
out["probe"] = data
check("full probe: GPU section", data["gpu"]["available"])
check("full probe: benchmark ran", data["benchmark"]["score"] > 0, data["benchmark"]["reason"])
check("full probe: determinism class", data["determinism_class"], data["determinism_class"])

# Do a model's CUDA runs, in fresh sessions opened as the sandbox opens them, give the same
# bits? A GPU class holds every GPU model and is not slashable (scheduler.slashable_class,
# review round 77, F3); this measures whether one GPU agrees with itself at least.
import hashlib  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import helper  # noqa: E402

from sandbox._onnx_session import open_session  # noqa: E402


def det_model():
    rng = np.random.default_rng(7)
    w = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    m = rng.standard_normal((16 * 30 * 30, 64)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Flatten", ["c"], ["f"]),
        helper.make_node("MatMul", ["f", "m"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "det",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [8, 3, 32, 32])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [8, 64])],
        initializer=[
            helper.make_tensor("w", onnx.TensorProto.FLOAT, w.shape, w.ravel()),
            helper.make_tensor("m", onnx.TensorProto.FLOAT, m.shape, m.ravel()),
        ],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def determinism(provider, sessions=5):
    model = det_model()
    x = np.random.default_rng(8).standard_normal((8, 3, 32, 32)).astype(np.float32)
    digests = []
    for _ in range(sessions):
        s = open_session(model, opt_level="extended", threads=1, provider=provider)
        (y,) = s.run(None, {"x": x})
        digests.append(hashlib.blake2b(np.ascontiguousarray(y).tobytes(), digest_size=8).hexdigest())
    return {"provider": provider, "sessions": sessions, "distinct_outputs": len(set(digests))}


out["determinism"] = [determinism("CPUExecutionProvider")]
check("CPU runs of one model agree", out["determinism"][0]["distinct_outputs"] == 1)
if cuda_ep.works:
    # a measurement, not a pass/fail: GPU classes are not slashed either way
    out["determinism"].append(determinism("CUDAExecutionProvider"))

out["checks"] = checks
out["ok"] = all(c["ok"] for c in checks)
print(json.dumps(out, indent=2, default=str))
sys.exit(0 if out["ok"] else 1)
PY
