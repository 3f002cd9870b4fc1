"""The hardware probe: parsing fixture texts, the real no-GPU path, providers, the benchmark,
and the JSON keys documented in specs/probe.md."""

from __future__ import annotations

import ctypes.util
import dataclasses
import json
import re
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.helper
import onnx.numpy_helper
import onnxruntime as ort
import pytest

from node.probe import (
    SCHEMA,
    ProbeReport,
    check_provider,
    determinism_class,
    isa_level,
    median_ns,
    parse_cgroup_cpu_max,
    parse_cgroup_memory_max,
    parse_cpuinfo,
    parse_meminfo,
    probe_gpus,
    probe_onnxruntime,
    probe_torch,
    run_benchmark,
    run_probe,
    score,
    tiny_model,
    workload,
)
from node.probe._cpu import parse_cgroup_v1_cpu_quota
from node.probe._gpu import format_cuda_version
from node.probe._onnx_models import (
    IR_VERSION,
    OPSET,
    TINY_INPUT,
    TINY_WEIGHTS,
    WORKLOAD_BATCH,
    WORKLOAD_LAYERS,
    WORKLOAD_WIDTH,
    fixed_values,
)
from node.probe._runtimes import parse_torch_version_file
from node.probe._sysfs import cgroup_dirs, parse_proc_self_cgroup

FIXTURES = Path(__file__).parent / "fixtures" / "cpuinfo"
SPEC = Path(__file__).parents[2] / "specs" / "probe.md"


# --- /proc/cpuinfo ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "arch", "model", "cores", "isa", "some_flags", "absent_flags"),
    [
        (
            "xeon_sapphire_rapids_2cpu.txt",
            "x86_64",
            "Intel(R) Xeon(R) Processor",
            2,
            "amx",
            {"avx2", "fma", "avx512f", "avx512_vnni", "amx_int8", "sse4_2"},
            {"neon", "pclmulqdq"},
        ),
        (
            "epyc_zen2_avx2.txt",
            "x86_64",
            "AMD EPYC 7R32",
            2,
            "avx2",
            {"avx", "avx2", "fma", "sse4_2", "f16c"},
            {"avx512f", "avx_vnni", "sse4a"},
        ),
        (
            "graviton2_neoverse_n1.txt",
            "aarch64",
            "Neoverse-N1",
            4,
            "dotprod",
            {"neon", "asimddp", "asimdhp"},
            {"asimd", "i8mm", "sve", "aes"},
        ),
        (
            "raspberry_pi4_aarch64.txt",
            "aarch64",
            "Cortex-A72 (Raspberry Pi 4 Model B Rev 1.4)",
            4,
            "neon",
            {"neon"},
            {"asimddp"},
        ),
        (
            # big.LITTLE: only the flags every core has count (the A55s lack i8mm)
            "rk3588_big_little.txt",
            "aarch64",
            "Cortex-A55 + Cortex-A76",
            2,
            "dotprod",
            {"neon", "asimddp"},
            {"i8mm"},
        ),
        (
            "raspberry_pi3_armv7.txt",
            "arm",
            "ARMv7 Processor rev 4 (v7l) (Raspberry Pi 3 Model B Rev 1.2)",
            2,
            "neon",
            {"neon"},
            {"vfpv4"},
        ),
    ],
)
def test_parse_cpuinfo_fixtures(
    fixture: str,
    arch: str,
    model: str,
    cores: int,
    isa: str,
    some_flags: set[str],
    absent_flags: set[str],
) -> None:
    machine = {"x86_64": "x86_64", "aarch64": "aarch64", "arm": "armv7l"}[arch]
    info = parse_cpuinfo((FIXTURES / fixture).read_text(), machine)
    assert info.architecture == arch
    assert info.model == model
    assert info.logical_cores == cores
    assert info.isa == isa
    assert some_flags <= set(info.flags)
    assert not absent_flags & set(info.flags)
    assert list(info.flags) == sorted(info.flags, key=list(info.flags).index)  # no duplicates
    assert len(set(info.flags)) == len(info.flags)


@pytest.mark.parametrize("text", ["", "garbage\n\n:::\n", "processor : 0\n", "\0\xff" * 50])
def test_parse_cpuinfo_never_fails(text: str) -> None:
    info = parse_cpuinfo(text, "x86_64")
    assert info.isa == "sse2"
    assert info.model == "unknown"
    assert parse_cpuinfo(text, "aarch64").isa == "neon"
    assert parse_cpuinfo(text, "riscv64").isa == "generic"


def test_arm_unknown_part_is_named_by_implementer() -> None:
    text = "processor : 0\nFeatures : fp asimd\nCPU implementer : 0x61\nCPU part : 0x022\n"
    assert parse_cpuinfo(text, "arm64").model == "Apple part 0x022"


@pytest.mark.parametrize(
    ("arch", "flags", "level"),
    [
        ("x86_64", {"avx512f", "avx512dq", "avx512bw", "avx512vl"}, "avx512"),
        ("x86_64", {"avx512f"}, "sse2"),  # avx512f alone (Knights Landing) without avx2
        ("x86_64", {"avx512f", "avx2", "fma", "avx"}, "avx2"),
        ("x86_64", {"avx2", "fma", "avx_vnni"}, "avx2vnni"),
        ("x86_64", {"avx2", "avx"}, "avx"),  # no fma: the FMA3 kernels cannot run
        ("x86_64", {"sse4_1"}, "sse4_1"),
        ("aarch64", {"neon", "asimddp", "i8mm"}, "i8mm"),
        ("arm", set(), "generic"),
    ],
)
def test_isa_levels(arch: str, flags: set[str], level: str) -> None:
    assert isa_level(arch, flags) == level


# --- cgroups and memory ------------------------------------------------------------------


def test_cgroup_cpu_quota() -> None:
    assert parse_cgroup_cpu_max("max 100000\n") is None
    assert parse_cgroup_cpu_max("150000 100000\n") == 1500
    assert parse_cgroup_cpu_max("50000 100000") == 500
    assert parse_cgroup_cpu_max("1 1000000") == 1  # never rounds a limit down to zero
    assert parse_cgroup_cpu_max("") is None
    assert parse_cgroup_cpu_max("lots of cores") is None
    assert parse_cgroup_v1_cpu_quota("-1\n", "100000\n") is None
    assert parse_cgroup_v1_cpu_quota("200000\n", "100000\n") == 2000


def test_cgroup_memory_limit() -> None:
    assert parse_cgroup_memory_max("max\n") is None
    assert parse_cgroup_memory_max("2147483648\n") == 2 << 30
    assert parse_cgroup_memory_max("9223372036854771712\n") is None  # v1 "unlimited"
    assert parse_cgroup_memory_max("") is None


def test_proc_self_cgroup_and_ancestors() -> None:
    text = "12:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/user.slice/u.scope\n"
    assert parse_proc_self_cgroup(text) == "/user.slice/u.scope"
    assert parse_proc_self_cgroup(text, "cpu") == "/docker/abc"
    assert parse_proc_self_cgroup(text, "memory") == "/docker/abc"
    assert parse_proc_self_cgroup(text, "pids") is None
    assert parse_proc_self_cgroup("garbage") is None
    root = Path("/sys/fs/cgroup")
    assert cgroup_dirs(root, "/a/b") == [root / "a" / "b", root / "a", root]
    assert cgroup_dirs(root, "/../../etc") == [root / "etc", root]
    assert len(cgroup_dirs(root, "/x" * 10_000)) == 65  # bounded


def test_parse_meminfo() -> None:
    text = "MemTotal:       16318720 kB\nMemFree:         1000 kB\nMemAvailable:   8000000 kB\n"
    assert parse_meminfo(text) == (16318720 * 1024, 8000000 * 1024)
    assert parse_meminfo("MemTotal: 1024 kB\nMemFree: 512 kB\n") == (1 << 20, 512 << 10)
    assert parse_meminfo("nonsense\n: kB\n") == (0, 0)


# --- GPUs and runtimes -------------------------------------------------------------------


def test_no_gpu_is_reported_not_raised() -> None:
    report = probe_gpus()
    assert report.available == bool(report.devices)
    if ctypes.util.find_library("nvidia-ml") is None:  # this machine: the real "no GPU" path
        assert not report.available
        assert report.reason is not None and "NVML library" in report.reason
        assert report.driver_version is None and report.devices == []
    elif not report.available:
        assert report.reason


def test_cuda_version_format() -> None:
    assert format_cuda_version(12040) == "12.4"
    assert format_cuda_version(11080) == "11.8"
    assert format_cuda_version(13000) == "13.0"


def test_cpu_provider_works() -> None:
    check = check_provider(ort, "CPUExecutionProvider")
    assert check.works and check.detail is None


def test_silent_fallback_is_detected() -> None:
    """Asking this CPU-only onnxruntime for CUDA gives a session that runs on the CPU."""
    assert "CUDAExecutionProvider" not in ort.get_available_providers()
    check = check_provider(ort, "CUDAExecutionProvider")
    assert not check.works
    assert check.detail is not None and "fell back to CPUExecutionProvider" in check.detail
    report = probe_onnxruntime(check_cuda=True)
    cuda = [c for c in report.checks if c.provider == "CUDAExecutionProvider"]
    assert len(cuda) == 1 and not cuda[0].works and "onnxruntime-gpu" in (cuda[0].detail or "")
    assert "CUDAExecutionProvider" not in report.working_providers
    assert "CPUExecutionProvider" in report.working_providers
    assert report.version == ort.__version__


def test_torch_version_file_parsing() -> None:
    text = "__version__ = '2.4.0+cu124'\ndebug = False\ncuda: Optional[str] = '12.4'\nhip = None\n"
    assert parse_torch_version_file(text) == {"cuda": "12.4", "hip": None}
    assert parse_torch_version_file("cuda = None\n") == {"cuda": None, "hip": None}
    assert parse_torch_version_file("") == {"cuda": None, "hip": None}


def test_torch_metadata_without_import() -> None:
    report = probe_torch()
    assert report.installed and not report.imported and report.cuda_available is None
    assert report.version is not None and report.version.startswith("2.")


# --- the fixed ONNX models ---------------------------------------------------------------


def _splitmix_reference(stream: int, i: int, scale: float) -> np.float32:
    mask = (1 << 64) - 1
    z = ((stream << 32) + i + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    z ^= z >> 31
    return np.float32((2.0 * ((z >> 40) / float(1 << 24)) - 1.0) * scale)


def test_fixed_values_follow_the_spec_formula() -> None:
    values = fixed_values(1000, 3, 0.5)
    for i in (0, 1, 2, 500, 999):
        assert values[i] == _splitmix_reference(3, i, 0.5)
    assert values.dtype == np.float32 and float(np.abs(values).max()) <= 0.5


def _helper_model(
    nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], name: str, shape: list[int]
) -> onnx.ModelProto:
    graph = onnx.helper.make_graph(
        nodes,
        name,
        [onnx.helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, shape)],
        [onnx.helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, shape)],
        initializer=inits,
    )
    model = onnx.helper.make_model(
        graph,
        producer_name="aimx-probe",
        opset_imports=[onnx.helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
    )
    return model


def _raw(name: str, array: np.ndarray[Any, Any]) -> onnx.TensorProto:
    return onnx.helper.make_tensor(
        name, onnx.TensorProto.FLOAT, array.shape, array.astype("<f4").tobytes(), raw=True
    )


def test_tiny_model_equals_the_onnx_helper_construction() -> None:
    ours = onnx.load_from_string(tiny_model())
    onnx.checker.check_model(ours)
    expected = _helper_model(
        [
            onnx.helper.make_node("MatMul", ["X", "W"], ["XW"], name="matmul"),
            onnx.helper.make_node("Relu", ["XW"], ["Y"], name="relu"),
        ],
        [_raw("W", TINY_WEIGHTS)],
        "aimx-probe-tiny",
        [1, 4],
    )
    assert ours == expected
    session = ort.InferenceSession(tiny_model(), providers=["CPUExecutionProvider"])
    out = session.run(None, {"X": TINY_INPUT})[0]
    assert out.tolist() == [[3.0, 4.75, 5.0, 5.5]]


def test_workload_equals_the_onnx_helper_construction() -> None:
    w = workload()
    ours = onnx.load_from_string(w.model)
    onnx.checker.check_model(ours)
    width, scale = WORKLOAD_WIDTH, float(np.sqrt(6.0 / WORKLOAD_WIDTH))
    nodes, inits, current = [], [], "X"
    for k in range(WORKLOAD_LAYERS):
        out = "Y" if k == WORKLOAD_LAYERS - 1 else f"H{k}"
        nodes.append(onnx.helper.make_node("MatMul", [current, f"W{k}"], [f"M{k}"], f"matmul{k}"))
        nodes.append(onnx.helper.make_node("Relu", [f"M{k}"], [out], f"relu{k}"))
        inits.append(_raw(f"W{k}", fixed_values(width * width, k + 1, scale).reshape(width, -1)))
        current = out
    expected = _helper_model(nodes, inits, "aimx-probe-workload", [WORKLOAD_BATCH, width])
    assert ours == expected
    assert w.flops == 2 * WORKLOAD_BATCH * width * width * WORKLOAD_LAYERS
    assert w.input.shape == (WORKLOAD_BATCH, width)


def test_workload_hash_is_the_documented_one() -> None:
    documented = re.search(r"`workload_hash` = `([0-9a-f]{64})`", SPEC.read_text())
    assert documented is not None, "specs/probe.md must give the workload hash"
    assert workload().model_hash == documented.group(1)


# --- benchmark ---------------------------------------------------------------------------


def test_median_and_score() -> None:
    assert median_ns([5, 1, 3]) == 3
    assert median_ns([4, 1, 3, 2]) == 2  # (2 + 3) // 2
    assert score(1_000_000_000, [1_000_000_000]) == 1000  # 1 GFLOP in 1 s = 1000 MFLOP/s
    assert score(10, [0]) == 10_000  # never divides by zero
    with pytest.raises(ValueError):
        median_ns([])


def test_benchmark_runs_the_workload() -> None:
    report = run_benchmark(1, min_runs=2, max_runs=3)
    assert report.reason is None
    assert 2 <= report.runs <= 3
    assert report.median_ns > 0 and report.score > 0
    assert report.score == report.flops_per_run * 1000 // report.median_ns
    assert report.workload_hash == workload().model_hash and report.threads == 1


# --- the whole report and its documented keys --------------------------------------------


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> ProbeReport:
    return run_probe(tmp_path_factory.mktemp("data") / "not-yet-created")


def _type_keys(cls: type, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        path = f"{prefix}{f.name}"
        keys.add(path)
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        origin = typing.get_origin(hint)
        inner = hint
        if origin in (typing.Union, types.UnionType) and len(args) == 1:
            inner = args[0]
        if dataclasses.is_dataclass(inner) and isinstance(inner, type):
            keys |= _type_keys(inner, path + ".")
        elif typing.get_origin(inner) is list:
            (item,) = typing.get_args(inner)
            if dataclasses.is_dataclass(item) and isinstance(item, type):
                keys |= _type_keys(item, path + "[].")
    return keys


def _value_keys(value: object, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            keys.add(prefix + k)
            keys |= _value_keys(v, prefix + k + ".")
    elif isinstance(value, list):
        for item in value:
            keys |= _value_keys(item, prefix[:-1] + "[].")
    return keys


def _documented_keys() -> set[str]:
    text = SPEC.read_text()
    section = text.split("## Keys", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_.\[\]]+)` \|", section, flags=re.M))


def test_documented_keys_match_the_report(report: ProbeReport) -> None:
    documented = _documented_keys()
    assert documented == _type_keys(ProbeReport)
    data = json.loads(json.dumps(report.to_json()))
    assert _value_keys(data) <= documented
    assert set(data) == {k for k in documented if "." not in k}


def test_report_on_this_machine(report: ProbeReport) -> None:
    assert report.schema == SCHEMA
    assert report.cpu.usable_cores >= 1 and report.cpu.logical_cores >= report.cpu.usable_cores
    assert report.memory.total_bytes >= report.memory.available_bytes > 0
    assert report.disk.free_bytes > 0  # measured on the nearest existing parent
    assert report.benchmark is not None and report.benchmark.score > 0
    assert report.determinism_class is not None
    assert report.determinism_class.startswith(f"ort-{ort.__version__}/cpu/")
    assert report.determinism_class.endswith("/extended")


def test_determinism_class_is_the_sandbox_one(report: ProbeReport) -> None:
    import sandbox

    assert report.determinism_class == sandbox.determinism_class("onnx", "cpu", "extended")


def test_probe_isa_level_is_the_sandbox_one_on_this_machine(report: ProbeReport) -> None:
    """The probe's own class (its ISA level from its flags) equals the sandbox's class: a
    node advertises the class its jobs will report."""
    import sandbox

    assert report.cpu.isa == sandbox.cpu_isa()
    assert isa_level is sandbox.isa_level
    own = determinism_class(ort.__version__, report.cpu.isa)
    assert own == sandbox.determinism_class("onnx", "cpu", "extended")


def test_determinism_class_format() -> None:
    assert determinism_class("1.32.0", "avx2") == "ort-1.32.0/cpu/avx2/extended"


def test_torch_import_checks_cuda() -> None:
    report = probe_torch(import_torch=True)
    assert report.imported and report.reason is None
    assert report.cuda_available is not None and report.cuda_device_count is not None
    if report.cuda_build is None:  # the CPU build installed here
        assert report.cuda_available is False and report.cuda_device_count == 0


def test_probe_imports_without_the_daemon_dependencies(tmp_path: Path) -> None:
    """scripts/gpu-check.sh runs the probe where only numpy, onnxruntime, pynvml and torch
    exist: importing and running it must not need libp2p, msgpack, PyNaCl, onnx, ..."""
    blocked = ["libp2p", "msgpack", "nacl", "onnx", "typer", "rich", "trio", "pydantic", "protocol"]
    code = (
        "import sys, json\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "from node.probe import run_probe\n"
        f"r = run_probe({str(tmp_path)!r}, benchmark=False)\n"
        "print(json.dumps(r.to_json()))\n"
    )
    root = Path(__file__).parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert "CPUExecutionProvider" in data["onnxruntime"]["working_providers"]
    assert data["determinism_class"].startswith("ort-")
