"""A bid names the determinism class of the run it would make: a GPU node runs a CPU job
on its CPU, a job pinned to another graph optimization level is in that level's class."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from protocol import Bid, sign
from scheduler import Provider, ProviderConfig, run_key

from ..keys import key
from ._harness import CHAIN, CLASS
from .test_provider_bounds import Sim, _answers

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


def _gpu_provider() -> Provider:
    return Provider(
        ProviderConfig(
            key=key("provider"),
            chain_id=CHAIN,
            capability_classes=(CLASS,),
            execution_providers=(CPU, CUDA),
            gpu_memory_mb=24_000,
            max_concurrency=8,
            determinism_class="ort/cpu/extended",
            determinism_classes={
                run_key("onnx", CUDA, "extended"): "ort/cuda/extended",
                run_key("onnx", CPU, "basic"): "ort/cpu/basic",
            },
        )
    )


def test_the_bid_names_the_class_of_the_run_the_job_asks_for() -> None:
    sim = Sim(7)
    prov = _gpu_provider()
    on_gpu = replace(sim.spec("alice").requirements, device="gpu", execution_provider=CUDA)
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "ort/cpu/extended"),
        ({"requirements": on_gpu}, "ort/cuda/extended"),
        ({"graph_opt_level": "basic"}, "ort/cpu/basic"),
        ({"graph_opt_level": "all"}, "ort/cpu/extended"),  # not listed: the default class
    ]
    for fields, want in cases:
        signed = sign(sim.spec("alice", **fields), key("alice"), CHAIN)
        (bid,) = _answers(prov.receive(signed.raw, sim.now))
        assert isinstance(bid, Bid)
        assert bid.determinism_class == want, fields
