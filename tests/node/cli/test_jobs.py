"""``aimx job``: the list, full ids, id prefixes, Ctrl-C while waiting and a redundancy out of
range (issue 18): each mistake gets a short message naming the fix and its exit status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
import trio
from typer.testing import CliRunner

from node._runinfo import RunInfo, write_runinfo
from node.api import (
    ApiError,
    Client,
    Request,
    Response,
    load_or_create_token,
    make_router,
    serve_http,
)
from node.cli import app
from node.daemon import Node
from node.daemon._run import data_dir_lock
from sandbox import tiny_model_path

from ..daemon._cluster import cluster, tiny_inputs

AIMX = (sys.executable, "-m", "node")


def aimx(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"AIMX_DATA_DIR": None, "COLUMNS": "200"})
    return result.exit_code, result.output


def short(output: str) -> bool:
    return 0 < len(output.strip().splitlines()) < 5 and "Traceback" not in output


@asynccontextmanager
async def serving(
    node: Node, data_dir: Path, polled: trio.Event | None = None
) -> AsyncIterator[None]:
    """``node``'s API, found through ``data_dir`` as the CLI finds a daemon's; ``polled``
    is set when a client first asks for a job's status."""
    token = load_or_create_token(data_dir)
    router = make_router(node, token=token)

    async def handler(request: Request) -> Response:
        if polled is not None and request.path.startswith("/api/jobs/"):
            polled.set()
        return await router(request)

    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_http, handler, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{port}"
        write_runinfo(data_dir, RunInfo(os.getpid(), "12D3KooW", ("requester",), (), url, "c", 1))
        with data_dir_lock(data_dir):  # held as a daemon holds it (the CLI checks)
            yield
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("redundancy", ["0", "17"])
def test_a_redundancy_out_of_range_is_refused_up_front(tmp_path: Path, redundancy: str) -> None:
    # no node runs in tmp_path: the check comes before anything else
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    code, out = aimx(
        "job", "submit", str(model), "--input", "x=x.npy", "--redundancy", redundancy,
        "--data-dir", str(tmp_path),
    )  # fmt: skip
    assert code == 1 and short(out) and "give 1 to 16" in out, out


async def test_job_list_full_ids_and_prefixes(tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with cluster(1) as cl, serving(cl.requester, tmp_path):
            job_id = await cl.requester.submit_job(
                tiny_model_path().read_bytes(), tiny_inputs(), model_name="tiny.onnx"
            )
            full = job_id.hex()
            d = ("--data-dir", str(tmp_path))

            code, out = await trio.to_thread.run_sync(lambda: aimx("job", "list", *d))
            assert code == 0 and full in out and "tiny.onnx" in out, out
            code, out = await trio.to_thread.run_sync(lambda: aimx("job", "list", "--json", *d))
            assert code == 0 and json.loads(out)[0]["job_id"] == full, out

            # a unique prefix finds the job; the full id is printed
            code, out = await trio.to_thread.run_sync(
                lambda: aimx("job", "status", full[:6], "--json", *d)
            )
            assert code == 0 and json.loads(out)["job_id"] == full, out
            code, out = await trio.to_thread.run_sync(lambda: aimx("job", "status", full[:6], *d))
            assert code == 0 and full in out, out

            # too short, not hex, unknown, ambiguous: one short line each, exit 1
            unknown = "0000" if not full.startswith("0000") else "ffff"
            twin = bytes.fromhex(full[:8] + "0" * 56)
            cl.requester.jobs[twin] = cl.requester.jobs[job_id]
            for given, says in [
                ("abc", "at least 4"),
                ("zzzzz", "at least 4"),
                (unknown, f"no job {unknown}"),
                (full[:6], "give more digits"),
            ]:
                code, out = await trio.to_thread.run_sync(
                    lambda g=given: aimx("job", "status", g, *d)  # type: ignore[misc]
                )
                assert code == 1 and short(out) and says in out, (given, out)
                assert "aimx job list" in " ".join(out.split()), out
            del cl.requester.jobs[twin]

            # the API refuses a redundancy of 0 too (it used to run it as 1)
            def zero() -> None:
                with Client.for_data_dir(tmp_path) as c:
                    c.submit(tiny_model_path(), tiny_inputs(), redundancy=0)

            with pytest.raises(ApiError, match="400 redundancy must be between 1 and 16"):
                await trio.to_thread.run_sync(zero)


async def test_ctrl_c_while_waiting_names_the_job_and_exits_130(tmp_path: Path) -> None:
    x = tmp_path / "x.npy"
    (name, value), *_ = tiny_inputs().items()
    np.save(x, value)
    polled = trio.Event()
    log = tmp_path / "cli.log"
    with trio.fail_after(60):
        # one contributor for two replicas: the job waits
        async with cluster(1) as cl, serving(cl.requester, tmp_path, polled):
            with log.open("wb") as out:
                submit = ["job", "submit", str(tiny_model_path()), "--input", f"{name}={x}"]
                wait = ["--redundancy", "2", "--wait", "--data-dir", str(tmp_path)]
                proc = await trio.lowlevel.open_process(
                    [*AIMX, *submit, *wait],
                    stdout=out,
                    stderr=out,
                    env={**os.environ, "COLUMNS": "200"},
                )
                try:
                    await polled.wait()
                    proc.send_signal(signal.SIGINT)
                    code = await proc.wait()
                finally:
                    proc.kill()
            (job_id,) = cl.requester.jobs
            assert cl.requester.jobs[job_id].done is None  # it keeps running
    output = log.read_text()
    assert code == 130, output
    assert short(output), output
    full = job_id.hex()
    assert f"job {full} keeps running; follow it with aimx job status {full}" in output, output


async def test_a_bad_model_or_input_fails_in_the_cli_at_once(tmp_path: Path) -> None:
    # Each mistake through the real CLI process with --wait: refused by the node's API
    # before anything is locked, a short message naming the fix, exit 1, in well under the
    # deadline (which used to be waited out, ending in "no result arrived in time").
    (name, x), *_ = tiny_inputs().items()
    junk = tmp_path / "fake.onnx"
    junk.write_bytes(b"not an onnx model\n")
    files = {"f32": x, "i64": x.astype(np.int64), "short": x[:, :-1]}
    for stem, value in files.items():
        np.save(tmp_path / f"{stem}.npy", value)
    model = str(tiny_model_path())
    mistakes = [
        (str(junk), f"{name}={tmp_path / 'f32.npy'}", "export it to ONNX"),
        (model, f"{name}={tmp_path / 'i64.npy'}", "the model wants <f4"),
        (model, f"{name}={tmp_path / 'short.npy'}", "the model wants 16"),
        (model, f"nope={tmp_path / 'f32.npy'}", "missing inputs ['x']"),
    ]
    with trio.fail_after(90):
        async with cluster(1) as cl, serving(cl.requester, tmp_path):
            node = cl.requester
            before = node.ledger.state.balance(node.me)
            for path, given, says in mistakes:
                command = [*AIMX, "job", "submit", path, "--input", given, "--redundancy", "2"]
                start = trio.current_time()
                done = await trio.run_process(
                    [*command, "--wait", "--data-dir", str(tmp_path)],
                    capture_stdout=True,
                    stderr=subprocess.STDOUT,
                    check=False,
                    env={**os.environ, "COLUMNS": "200"},
                )
                took = trio.current_time() - start
                out = done.stdout.decode()
                assert done.returncode == 1, out
                assert short(out) and says in out, out
                assert "save each --input" in out or "aimx sandbox run" in out, out
                assert took < 10.0, (took, out)  # the process itself, imports included
            assert not node.jobs
            await cl.settle_blocks(2)
            assert node.ledger.state.balance(node.me) == before  # nothing locked


async def test_wait_says_when_the_network_is_short_of_replicas(tmp_path: Path) -> None:
    # Two replicas asked, one contributor: --wait says so while it waits, then the job ends
    # at its deadline with the one result it has.
    x = tmp_path / "x.npy"
    (name, value), *_ = tiny_inputs().items()
    np.save(x, value)
    with trio.fail_after(60):
        async with cluster(1) as cl, serving(cl.requester, tmp_path):
            submit = ["job", "submit", str(tiny_model_path()), "--input", f"{name}={x}"]
            wait = ["--redundancy", "2", "--deadline", "4", "--wait", "--data-dir", str(tmp_path)]
            done = await trio.run_process(
                [*AIMX, *submit, *wait],
                capture_stdout=True,
                stderr=subprocess.STDOUT,
                check=False,
                env={**os.environ, "COLUMNS": "200"},
            )
    out = done.stdout.decode()
    says = "1 of 2 replicas found; waiting for more contributors of onnx.cpu.m1"
    assert out.count(says) == 1, out


def test_an_input_file_over_a_tensor_s_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    # Review round 69: a 60 MiB input was loaded, base64-encoded and sent whole (RSS
    # 388 MB), then refused with a bare "413 request body over 67108864 bytes".
    from node.cli.job import JobCommandError, parse_inputs

    big = tmp_path / "x.npy"
    np.save(big, np.zeros(2 << 20, np.float32))  # 8 MiB
    with pytest.raises(JobCommandError, match=r"at most 1048576 .* split it"):
        parse_inputs([f"x={big}"])
    small = tmp_path / "y.npy"
    np.save(small, np.ones(16, np.float32))
    assert parse_inputs([f"y={small}"])["y"].shape == (16,)
