"""The job runners of ``sandbox.testing``: right results without workers, and the slow,
corrupting and failing contributors a daemon test makes from them."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import protocol
import sandbox
from sandbox.testing import CorruptingRunner, FailingRunner, InProcessRunner, SlowRunner

from . import models as M


def x16(n: int = 3) -> dict[str, np.ndarray]:  # type: ignore[type-arg]
    return {"x": np.linspace(-1, 1, n * 16, dtype=np.float32).reshape(n, 16)}


def tiny_job(tiny_model: bytes, n: int = 3) -> sandbox.JobRequest:
    return sandbox.JobRequest("onnx", tiny_model, x16(n))


class Recording:
    """A runner that records the jobs it was given and answers with a fixed outcome."""

    def __init__(self, outcome: sandbox.Outcome) -> None:
        self.outcome = outcome
        self.jobs: list[sandbox.JobRequest] = []

    def run(self, job: sandbox.JobRequest) -> sandbox.Outcome:
        self.jobs.append(job)
        return self.outcome


# --- InProcessRunner ---------------------------------------------------------------------


def test_in_process_runs_the_model(tiny_model: bytes) -> None:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(tiny_model, opts, providers=["CPUExecutionProvider"])
    expected = session.run(None, x16())[0]
    outcome = InProcessRunner().run(tiny_job(tiny_model))
    assert outcome.kind == "ok", outcome.message
    assert outcome.outputs["y"].tobytes() == expected.tobytes()
    assert outcome.commitment == sandbox.output_commitment(outcome.outputs)
    assert outcome.determinism_class == sandbox.determinism_class("onnx", "cpu", "extended")
    assert outcome.usage.wall_ms >= 0 and outcome.usage.peak_memory_kb == 0
    assert outcome.runtime_us > 0


def test_in_process_gives_the_sandbox_result(box: sandbox.Sandbox, tiny_model: bytes) -> None:
    """The same commitment and determinism class as a worker: a fake contributor's result
    agrees with a real one's under the exact policy."""
    model = M.raw(M.conv())
    inputs = {"x": np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)}
    runner = InProcessRunner()
    for job in (tiny_job(tiny_model), sandbox.JobRequest("onnx", model, inputs, threads=2)):
        fake, real = runner.run(job), box.run(job)
        assert fake.kind == real.kind == "ok", (fake.message, real.message)
        assert fake.commitment == real.commitment
        assert fake.determinism_class == real.determinism_class


def test_in_process_keeps_sessions_per_model_and_settings(tiny_model: bytes) -> None:
    runner = InProcessRunner(max_sessions=1)
    first = runner.run(tiny_job(tiny_model))
    again = runner.run(tiny_job(tiny_model, 5))
    other = runner.run(sandbox.JobRequest("onnx", tiny_model, x16(), graph_opt_level="basic"))
    back = runner.run(tiny_job(tiny_model))  # evicted by the one above
    assert (first.warm, again.warm, other.warm, back.warm) == (False, True, False, False)
    assert again.outputs["y"].shape == (5, 4)
    assert other.determinism_class.endswith("/basic")


def test_in_process_is_thread_safe(tiny_model: bytes) -> None:
    runner = InProcessRunner()
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(runner.run, [tiny_job(tiny_model)] * 16))
    assert {o.kind for o in outcomes} == {"ok"}
    assert len({o.commitment for o in outcomes}) == 1


@pytest.mark.parametrize(
    ("job", "wanted"),
    [
        (sandbox.JobRequest("torchscript", b"x", {}), "runs onnx jobs"),
        (sandbox.JobRequest("onnx", b"x", x16(), threads=0), "threads"),
        (sandbox.JobRequest("onnx", b"x", x16(), graph_opt_level="max"), "optimization level"),
        (sandbox.JobRequest("onnx", b"not a model", x16()), ""),
    ],
)
def test_in_process_rejects_what_the_sandbox_rejects(job: sandbox.JobRequest, wanted: str) -> None:
    outcome = InProcessRunner().run(job)
    assert outcome.kind == "rejected"
    assert wanted in outcome.message


def test_in_process_checks_the_inputs(tiny_model: bytes) -> None:
    runner = InProcessRunner()
    wrong_name = runner.run(sandbox.JobRequest("onnx", tiny_model, {"z": x16()["x"]}))
    wrong_dtype = runner.run(
        sandbox.JobRequest("onnx", tiny_model, {"x": x16()["x"].astype(np.float64)})
    )
    assert wrong_name.kind == wrong_dtype.kind == "rejected"
    assert "missing inputs" in wrong_name.message


def test_in_process_output_limit(tiny_model: bytes) -> None:
    small = sandbox.Limits(output_bytes=16)
    by_runner = InProcessRunner(limits=small).run(tiny_job(tiny_model))
    by_job = InProcessRunner().run(sandbox.JobRequest("onnx", tiny_model, x16(), limits=small))
    assert by_runner.kind == by_job.kind == "output_limit"


# --- wrappers ----------------------------------------------------------------------------


def test_slow_runner_waits_then_runs_the_inner_job() -> None:
    ok = sandbox.Outcome("ok", "", protocol.Usage(cpu_ms=1, wall_ms=1, peak_memory_kb=1, gpu_ms=0))
    inner = Recording(ok)
    job = sandbox.JobRequest("onnx", b"m", {})
    t0 = time.monotonic()
    outcome = SlowRunner(inner, 0.05).run(job)
    assert time.monotonic() - t0 >= 0.05
    assert outcome is ok and inner.jobs == [job]
    with pytest.raises(ValueError):
        SlowRunner(inner, -1)


def test_slow_runner_runs_jobs_concurrently() -> None:
    """The delay blocks only its own thread: a slow contributor still runs jobs in parallel."""
    ok = sandbox.Outcome("ok", "", protocol.Usage(cpu_ms=0, wall_ms=0, peak_memory_kb=0, gpu_ms=0))
    runner = SlowRunner(Recording(ok), 1.0)
    job = sandbox.JobRequest("onnx", b"m", {})
    threads = [threading.Thread(target=runner.run, args=(job,)) for _ in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # one after the other they take 4 s; side by side 1 s, with room for a loaded machine
    assert time.monotonic() - t0 < 3.0


def test_corrupting_runner_changes_one_element_and_commits_to_it(tiny_model: bytes) -> None:
    job = tiny_job(tiny_model)
    honest = InProcessRunner().run(job)
    cheat = CorruptingRunner(InProcessRunner()).run(job)
    assert cheat.kind == "ok"
    assert cheat.commitment == sandbox.output_commitment(cheat.outputs) != honest.commitment
    diff = cheat.outputs["y"] - honest.outputs["y"]
    assert diff.flat[0] == pytest.approx(1.0)
    assert not diff.flat[1:].any()
    assert cheat.determinism_class == honest.determinism_class


def test_corrupting_runner_changes_the_first_output_by_name() -> None:
    a = np.zeros(3, dtype=np.int64)
    b = np.ones((2, 2), dtype=np.float32)
    usage = protocol.Usage(cpu_ms=3, wall_ms=4, peak_memory_kb=5, gpu_ms=0)
    outputs: dict[str, np.ndarray] = {"b": b, "a": a}  # type: ignore[type-arg]
    honest = sandbox.Outcome(
        "ok", "", usage, outputs, sandbox.output_commitment(outputs), "cls", warm=True
    )
    cheat = CorruptingRunner(Recording(honest)).run(sandbox.JobRequest("onnx", b"m", {}))
    assert list(cheat.outputs) == ["b", "a"]  # the order as it came
    assert cheat.outputs["a"].tolist() == [1, 0, 0]
    assert cheat.outputs["b"] is b
    assert a.tolist() == [0, 0, 0]  # the inner outcome's arrays are not written to
    assert cheat.commitment == sandbox.output_commitment(cheat.outputs)
    assert (cheat.usage, cheat.determinism_class, cheat.warm) == (usage, "cls", True)


def test_corrupting_runner_passes_failures_and_empty_outputs() -> None:
    zero = protocol.Usage(cpu_ms=0, wall_ms=0, peak_memory_kb=0, gpu_ms=0)
    job = sandbox.JobRequest("onnx", b"m", {})
    for outcome in (sandbox.Outcome("timeout", "late", zero), sandbox.Outcome("ok", "", zero)):
        assert CorruptingRunner(Recording(outcome)).run(job) is outcome


def test_failing_runner() -> None:
    outcome = FailingRunner("memory_limit", "too big").run(sandbox.JobRequest("onnx", b"m", {}))
    assert (outcome.kind, outcome.message, outcome.ok) == ("memory_limit", "too big", False)
    assert outcome.usage == protocol.Usage(cpu_ms=0, wall_ms=0, peak_memory_kb=0, gpu_ms=0)
    assert FailingRunner().run(sandbox.JobRequest("onnx", b"m", {})).kind == "runtime_error"
    for kind in ("ok", "exploded"):
        with pytest.raises(ValueError):
            FailingRunner(kind)
