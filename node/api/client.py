"""The Python API for workspaces: submit a job to a node, wait for it, fetch the result.

It talks to a running node's local HTTP API (specs/api.md); the ``aimx`` commands use it.
Find a node by its data directory (``Client.for_data_dir``: its ``node.json`` and its API
token, ``api.token``), or give the URL and the token (``Client(url, token=...)``)::

    client = Client.for_data_dir(Path("~/.local/share/aimatrix-node"))
    job_id = client.submit("model.onnx", {"x": np.ones((1, 4), np.float32)}, redundancy=2)
    status = client.wait(job_id, timeout_s=60)
    outputs = client.result(job_id)
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from .._errors import NodeError
from .._runinfo import read_runinfo
from ._auth import read_token, token_path
from .npy import decode_array, encode_array

#: Longest single long-poll the server accepts; ``wait`` loops over several.
MAX_POLL_S = 30.0


class ApiError(NodeError):
    """The node answered with an error, or could not be reached."""


class Client:
    """A connection to one node's local API."""

    def __init__(
        self,
        api_url: str,
        *,
        token: str,
        timeout_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.api_url,
            timeout=timeout_s,
            headers={"authorization": f"Bearer {token}"},
            transport=transport,
        )

    @classmethod
    def for_data_dir(
        cls,
        data_dir: Path,
        *,
        timeout_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> Client:
        """A client of the node running with ``data_dir`` (its URL and token from there);
        ``transport``: how to connect (a node in a network namespace: ``NetnsTransport``)."""
        info = read_runinfo(data_dir)
        token = read_token(data_dir)
        if token is None:
            raise ApiError(
                f"no API token at {token_path(data_dir)}: the node writes it when it starts; "
                "are you the user that runs it?"
            )
        return cls(info.api_url, token=token, timeout_s=timeout_s, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach the node at {self.api_url}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:200]}
        if response.status_code >= 400:
            message = body.get("error") if isinstance(body, dict) else None
            raise ApiError(f"{method} {path}: {response.status_code} {message or body}")
        return body

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/api/status")  # type: ignore[no-any-return]

    def dashboard_token(self) -> dict[str, Any]:
        """This run's dashboard token and the ``api_port`` setting (``aimx node dashboard``)."""
        return self._call("GET", "/api/dashboard/token")  # type: ignore[no-any-return]

    def balance(self, account: str | None = None) -> dict[str, Any]:
        path = "/api/ledger/balance" + (f"/{account}" if account else "")
        return self._call("GET", path)  # type: ignore[no-any-return]

    def submit(
        self,
        model: Path | str | bytes,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        *,
        redundancy: int = 1,
        max_price: int | None = None,
        max_retries: int = 2,
        runtime: str | None = None,
        deadline_s: float = 120.0,
        model_name: str | None = None,
    ) -> str:
        """Submit a job; returns its id (hex). The node escrows and announces it."""
        if isinstance(model, bytes):
            blob, name = model, "model"
        else:
            blob, name = Path(model).read_bytes(), str(model)
        if runtime is None:
            runtime = "torchscript" if name.endswith((".pt", ".pth")) else "onnx"
        body = {
            "model": base64.b64encode(blob).decode(),
            "runtime": runtime,
            "inputs": {k: encode_array(v) for k, v in inputs.items()},
            "redundancy": redundancy,
            "max_price": max_price,
            "max_retries": max_retries,
            "deadline_ms": int(deadline_s * 1000),
            "model_name": model_name or Path(name).name,
        }
        return str(self._call("POST", "/api/jobs", json=body)["job_id"])

    def job(self, job_id: str, *, wait_s: float = 0.0, until: str = "done") -> dict[str, Any]:
        """The job's status; with ``wait_s`` the node answers early when the job is done
        (``until="done"``: its outcome is known) or its escrow closed (``"closed"``)."""
        params = {"wait": f"{min(wait_s, MAX_POLL_S):.3f}", "until": until} if wait_s > 0 else None
        return self._call("GET", f"/api/jobs/{job_id}", params=params)  # type: ignore[no-any-return]

    def jobs(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/jobs")["jobs"]  # type: ignore[no-any-return]

    def wait(
        self,
        job_id: str,
        *,
        timeout_s: float = 120.0,
        until: str = "done",
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Wait until the job is done (verified or failed; ``until="closed"``: also its
        escrow settled or refunded) or ``timeout_s`` passed; returns its last status.
        ``on_update`` sees each status on the way (for a progress display)."""
        deadline = time.monotonic() + timeout_s
        key = "closed" if until == "closed" else "done"
        while True:
            left = deadline - time.monotonic()
            status = self.job(job_id, wait_s=max(0.0, min(left, 1.0)), until=until)
            if on_update is not None:
                on_update(status)
            if status.get(key) or left <= 0:
                return status

    def providers(self, capability_class: str = "onnx.cpu.m1") -> list[str]:
        """Peer ids of the providers this node finds for a capability class."""
        body = self._call("GET", "/api/providers", params={"class": capability_class})
        return list(body["providers"])

    def faucet(self, account: str, amount: int) -> dict[str, Any]:
        """Mint demo credits to ``account`` (a coordinator's API only)."""
        body = {"account": account, "amount": amount}
        return self._call("POST", "/api/faucet", json=body)  # type: ignore[no-any-return]

    def stake(self, amount: int) -> dict[str, Any]:
        return self._call("POST", "/api/stake", json={"amount": amount})  # type: ignore[no-any-return]

    def pause(self, reason: str = "") -> dict[str, Any]:
        """The owner's pause (a contributor's API); answers the availability."""
        return self._call("POST", "/api/pause", json={"reason": reason})  # type: ignore[no-any-return]

    def resume(self) -> dict[str, Any]:
        return self._call("POST", "/api/resume", json={})  # type: ignore[no-any-return]

    def result(self, job_id: str, *, unverified: bool = False) -> dict[str, np.ndarray[Any, Any]]:
        """The verified output tensors of a finished job. An output no majority or known
        answer agreed on (status ``unverified``) is an :class:`ApiError` unless
        ``unverified`` says to take it anyway."""
        params = {"unverified": "1"} if unverified else {}
        body = self._call("GET", f"/api/jobs/{job_id}/result", params=params)
        try:
            return {name: decode_array(text) for name, text in body["outputs"].items()}
        except ValueError as exc:
            raise ApiError(f"the node sent an unreadable tensor: {exc}") from None
