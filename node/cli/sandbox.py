"""``aimx sandbox check|run``: which isolation layers this machine gives; run one job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

import sandbox

from .._errors import NodeError
from ._common import DataDirOption, JsonOption, command_group, resolve_data_dir, user_errors

sandbox_app = command_group(
    "sandbox",
    "Inspect the job sandbox and run a model in it.",
)


class SandboxCliError(NodeError):
    """A bad argument to ``aimx sandbox`` or a sandbox that cannot run the job."""


def _layers_json(layers: tuple[sandbox.Layer, ...]) -> list[dict[str, object]]:
    return [
        {
            "name": layer.name,
            "available": layer.available,
            "blocks_network": layer.blocks_network,
            "detail": layer.detail,
        }
        for layer in layers
    ]


@sandbox_app.command("check")
def check(ctx: typer.Context, data_dir: DataDirOption = None, json_out: JsonOption = False) -> None:
    """List the isolation layers this machine gives, and why any is missing."""
    resolve_data_dir(data_dir, ctx)
    with user_errors(), sandbox.Sandbox(sandbox.SandboxConfig(spare_workers=0)) as box:
        untrusted = box.blocks_network
        if json_out:
            print(
                json.dumps(
                    {
                        "layers": _layers_json(box.layers),
                        "in_use": box.layers_in_use(),
                        "untrusted_jobs": untrusted,
                        "cpu_isa": sandbox.cpu_isa(),
                    }
                )
            )
            return
        console = Console()
        for layer in box.layers:
            mark = "[green]yes[/]" if layer.available else "[red]no[/] "
            net = " (blocks network)" if layer.blocks_network else ""
            console.print(f"{mark} {layer.name:<11} {layer.detail}{net}")
        if untrusted:
            console.print("untrusted jobs: [green]accepted[/] (a layer blocks the network)")
        else:
            console.print("untrusted jobs: [red]refused[/] (no layer blocks the network)")


def _load_inputs(specs: list[str]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep or not name or not file:
            raise SandboxCliError(f"--input {spec!r}: use NAME=FILE.npy")
        try:
            out[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise SandboxCliError(f"--input {name}: cannot read {file} as .npy: {exc}") from None
    return out


@sandbox_app.command("run")
def run(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(help="Model file (.onnx, or .pt for TorchScript).")],
    inputs: Annotated[
        list[str] | None, typer.Option("--input", help="NAME=FILE.npy, once per input.")
    ] = None,
    runtime: Annotated[
        str | None, typer.Option(help="onnx or torchscript (default: from the file suffix).")
    ] = None,
    threads: Annotated[int, typer.Option(help="Intra-op threads.")] = 1,
    opt_level: Annotated[str, typer.Option(help="Graph optimization level.")] = "extended",
    wall_ms: Annotated[int, typer.Option(help="Wall-clock limit, ms.")] = 60_000,
    cpu_s: Annotated[int, typer.Option(help="CPU limit, seconds.")] = 60,
    memory_mb: Annotated[int, typer.Option(help="Memory limit, MiB.")] = 4096,
    save: Annotated[
        Path | None, typer.Option(help="Directory to write each output as NAME.npy.")
    ] = None,
    data_dir: DataDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Run one job through the same code the daemon uses and print the outcome."""
    resolve_data_dir(data_dir, ctx)
    with user_errors():
        try:
            data = model.read_bytes()
        except OSError as exc:
            raise SandboxCliError(f"cannot read the model {model}: {exc}") from None
        rt = runtime or ("torchscript" if model.suffix in (".pt", ".pth", ".ts") else "onnx")
        arrays = _load_inputs(inputs or [])
        limits = sandbox.Limits(wall_ms=wall_ms, cpu_s=cpu_s, memory_mb=memory_mb)
        job = sandbox.JobRequest(
            runtime=rt,
            model=data,
            inputs=arrays,
            threads=threads,
            graph_opt_level=opt_level,
            limits=limits,
        )
        with sandbox.Sandbox(sandbox.SandboxConfig(spare_workers=0)) as box:
            try:
                outcome = box.run(job)
            except sandbox.SandboxError as exc:
                raise SandboxCliError(str(exc)) from None
        if save is not None and outcome.ok:
            save.mkdir(parents=True, exist_ok=True)
            for name, array in outcome.outputs.items():
                np.save(save / f"{name}.npy", array, allow_pickle=False)
        report = {
            "outcome": outcome.kind,
            "message": outcome.message,
            "determinism_class": outcome.determinism_class,
            "commitment": outcome.commitment.hex(),
            "usage": {
                "cpu_ms": outcome.usage.cpu_ms,
                "wall_ms": outcome.usage.wall_ms,
                "peak_memory_kb": outcome.usage.peak_memory_kb,
                "gpu_ms": outcome.usage.gpu_ms,
            },
            "runtime_us": outcome.runtime_us,
            "outputs": {
                n: {"dtype": str(a.dtype), "shape": list(a.shape)}
                for n, a in outcome.outputs.items()
            },
            "layers": box.layers_in_use(),
        }
        if json_out:
            print(json.dumps(report))
        else:
            console = Console()
            style = "green" if outcome.ok else "red"
            console.print(f"outcome: [{style}]{outcome.kind}[/] {outcome.message}")
            console.print(f"class:   {outcome.determinism_class or '-'}")
            console.print(f"commit:  {outcome.commitment.hex() or '-'}")
            u = outcome.usage
            console.print(
                f"usage:   cpu {u.cpu_ms} ms, wall {u.wall_ms} ms, "
                f"peak {u.peak_memory_kb} KiB, gpu {u.gpu_ms} ms"
            )
            if outcome.runtime_us:
                console.print(f"runtime: {outcome.runtime_us / 1000:.3f} ms (the model's call)")
            for n, a in outcome.outputs.items():
                console.print(f"output:  {n} {a.dtype} {list(a.shape)}")
        if not outcome.ok:
            raise typer.Exit(2)
