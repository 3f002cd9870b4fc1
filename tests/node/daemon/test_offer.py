"""What the owner offers of the machine (``contributor.memory_mb`` and ``use_gpu``): at
start and when changed on a running node, the provider and its advert follow."""

from __future__ import annotations

import trio

import protocol
from node.daemon._profile import ProviderProfile
from sandbox.testing import InProcessRunner

from ._cluster import cluster

GPU = protocol.GpuInfo(name="RTX 4090", memory_mb=24_564, cuda_capability="8.9")


def _gpu_machine() -> ProviderProfile:
    return ProviderProfile(
        determinism_class="onnx/cpu/extended",
        memory_mb=32_768,
        execution_providers=("CPUExecutionProvider", "CUDAExecutionProvider"),
        gpus=(GPU,),
    )


def test_the_offer_narrows_the_machine_and_never_widens_it() -> None:
    machine = _gpu_machine()
    assert machine.offered(memory_mb=0, use_gpu=True) == machine
    cpu_only = machine.offered(memory_mb=0, use_gpu=False)
    assert cpu_only.gpus == () and cpu_only.execution_providers == ("CPUExecutionProvider",)
    assert not any("cuda" in c for c in cpu_only.classes())
    assert any("cuda" in c for c in machine.classes())
    capped = machine.offered(memory_mb=8_192, use_gpu=True)
    assert capped.memory_mb == 8_192 and capped.gpus == (GPU,)
    assert set(capped.classes()) <= set(machine.classes())
    assert machine.offered(memory_mb=10**6, use_gpu=True).memory_mb == 32_768  # not more


async def test_a_running_node_takes_a_smaller_offer_and_advertises_it() -> None:
    with trio.fail_after(30):
        async with cluster(1, runner=lambda i: InProcessRunner()) as cl:
            (node,) = cl.contributors
            assert node.provider is not None and node.profile is not None
            machine = node.profile.memory_mb
            smaller = node.config.model_copy(
                update={
                    "contributor": node.config.contributor.model_copy(update={"memory_mb": 256})
                }
            )
            node.reconfigure(smaller)
            assert node.profile.memory_mb == min(256, machine)
            assert node.provider.config.memory_mb == min(256, machine)
            assert node.provider.config.capability_classes == node.profile.classes()
            # the advert says so too
            advert = node.discovery._advert().message
            assert advert.memory_mb == min(256, machine)
            node.reconfigure(
                node.config.model_copy(
                    update={"contributor": smaller.contributor.model_copy(update={"memory_mb": 0})}
                )
            )
            assert node.provider.config.memory_mb == machine  # back to all of it
