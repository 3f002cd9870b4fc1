"""The local HTTP API of a node (specs/api.md): status, jobs, ledger, faucet, metrics,
pause and resume, configuration.

Every route is behind ``owner_only`` (``_auth``): loopback ``Host``, no foreign
``Origin``, the data directory's token, JSON POST bodies."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import trio

import protocol
from scheduler import JobStatus, WorkPhase

from .._errors import ConfigError
from ..config import (
    EDITABLE,
    Source,
    apply_changes,
    config_keys,
    faucet_enabled,
    flatten,
    write_changes,
)
from ._auth import owner_only
from ._http import SMALL_BODY_BYTES, Handler, HttpError, Request, Response, Router
from ._ratelimit import FaucetLimits
from .dashboard import Dashboard
from .npy import decode_array, encode_array
from .views import job_view, reachability_view

if TYPE_CHECKING:
    from ..daemon import Node

#: Longest long-poll a client may ask for, seconds.
MAX_WAIT_S = 30.0


def _input_array(name: str, text: Any) -> np.ndarray[Any, Any]:
    if not isinstance(text, str):
        raise HttpError(400, f"input {name!r} must be a base64 .npy string")
    try:
        return decode_array(text)
    except ValueError as exc:
        raise HttpError(400, f"input {name!r} is not a base64 .npy array: {exc}") from None


def _account(text: str) -> bytes:
    try:
        if len(text) == 64:
            return bytes.fromhex(text)
        return protocol.public_key_of(text)
    except (protocol.ProtocolError, ValueError):
        raise HttpError(400, f"{text!r} is not an account (peer id or 64 hex digits)") from None


def _int_field(body: dict[str, Any], name: str, default: int | None = None) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if type(value) is not int:
        raise HttpError(400, f"{name} must be an integer")
    return value


def _or(value: int | None, default: int) -> int:
    """``value``, or ``default`` where it was not given (0 stays 0: the daemon refuses it)."""
    return default if value is None else value


def availability_view(node: Node) -> dict[str, Any]:
    """``/api/status``'s ``availability``: the node's state, whether and why it is paused,
    since when, and its schedule (specs/api.md)."""
    verdict = node.pausing.verdict
    paused = bool(verdict and verdict.paused)
    reason = verdict.reason if verdict is not None else None
    if node.fault is not None:
        paused, reason = True, f"the ledger cannot be written ({node.fault})"
    if paused:
        state = "paused"
    elif not node.net.connected_peers():
        state = "offline"
    elif node.provider is not None and node.provider.active:
        state = "working"
    else:
        state = "idle"
    machine = node.pausing.machine
    schedule = machine.settings.schedule if machine is not None else None
    return {
        "state": state,
        "paused": paused,
        "reason": reason,
        "since_ms": verdict.since_ms if verdict is not None else None,
        "schedule": schedule.text if schedule is not None else None,
    }


def config_view(node: Node, sources: dict[str, Source]) -> dict[str, Any]:
    """``GET /api/config``: every setting's effective value, its source and whether the API
    may change it."""
    tree = node.config.model_dump(mode="json")
    settings: dict[str, Any] = {}
    for key, field in config_keys().items():
        value: Any = tree
        for part in key.split("."):
            value = value[part]
        settings[key] = {
            "value": value,
            "source": sources.get(key, "default"),
            "editable": key in EDITABLE,
            "description": field.description or "",
        }
    return {"settings": settings}


def make_router(
    node: Node,
    *,
    token: str,
    api_url: Callable[[], str] = lambda: "",
    data_dir: Path | None = None,
    config_sources: dict[str, Source] | None = None,
) -> Handler:
    """The API's routes, bound to ``node``, for requests that carry ``token`` (and pass
    the other access rules of ``_auth``). ``data_dir``: where ``PUT /api/config`` writes
    config.toml (``None``: it answers 409); ``config_sources``: where each setting of
    ``node.config`` came from (``GET /api/config``)."""
    # Imported here, not with the module: node.daemon imports this module to serve the API.
    from ..daemon import DaemonError, JobNotFound, RoleMissing

    def guarded(handler: Handler) -> Handler:
        """``handler`` with the daemon's errors answered as 404, 409 or 400."""

        async def guarded_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except JobNotFound as exc:
                raise HttpError(404, str(exc)) from None
            except RoleMissing as exc:
                raise HttpError(409, str(exc)) from None
            except DaemonError as exc:
                raise HttpError(400, str(exc)) from None

        return guarded_handler

    router = Router()

    async def status(request: Request) -> Response:
        state = node.ledger.state
        account = state.account(node.me)
        jobs: dict[str, int] = {}
        for record in node.jobs.values():
            key = record.done.status if record.done else "pending"
            jobs[key] = jobs.get(key, 0) + 1
        body: dict[str, Any] = {
            "peer_id": node.peer_id,
            "roles": sorted(node.roles),
            "chain_id": node.chain_id,
            "genesis_hash": node.genesis.hash().hex(),
            "height": state.height,
            "balance": account.balance,
            "stake": account.stake,
            "reputation": float(state.reputation(node.me)),
            "addresses": list(node.net.addresses()),
            **reachability_view(node.net),
            "connected_peers": len(node.net.connected_peers()),
            "api_url": api_url(),
            "jobs": jobs,
            "bad_messages": sum(node.bad_messages.values()),
            # why the node takes no new work (its ledger cannot be written), else null
            "fault": node.fault,
            "transactions": {
                "submitted": node.txq.submitted,
                "rejected": node.txq.rejected,
                "lost": node.txq.lost,
                "held_back": node.txq.held_back,
                "renumberings": node.txq.renumberings,
            },
            "availability": availability_view(node),
        }
        if node.provider is not None:
            work = node.provider.work
            phases: dict[str, int] = {}
            for w in work.values():
                phases[w.phase] = phases.get(w.phase, 0) + 1
            body["provider"] = {
                "capability_classes": list(node.provider.config.capability_classes),
                "active": node.provider.active,
                "work": phases,
                "earned": node.earned,
            }
        return Response.json(body)

    async def submit(request: Request) -> Response:
        if node.fault is not None:
            raise HttpError(
                503,
                f"this node takes no new jobs until its ledger can be written again "
                f"({node.fault}); free some space: it resumes by itself",
                {"retry-after": "30"},
            )
        body = request.json()
        if not isinstance(body, dict):
            raise HttpError(400, "the body must be a JSON object")
        try:
            model = base64.b64decode(str(body.get("model", "")), validate=True)
        except (ValueError, binascii.Error):
            raise HttpError(400, "model must be base64") from None
        raw_inputs = body.get("inputs")
        if not isinstance(raw_inputs, dict) or not raw_inputs:
            raise HttpError(400, "inputs must be an object of name -> base64 .npy")
        inputs = {str(k): _input_array(str(k), v) for k, v in raw_inputs.items()}
        runtime = body.get("runtime", "onnx")
        if not isinstance(runtime, str):
            raise HttpError(400, "runtime must be a string")
        max_price = _int_field(body, "max_price")
        settings = node.config.requester
        price = settings.max_price if max_price is None else max_price
        if price > settings.max_price_limit:
            raise HttpError(
                400,
                f"max_price {price} is over requester.max_price_limit "
                f"({settings.max_price_limit} micro-credits a replica); raise the setting in "
                "config.toml to allow it",
            )
        job_id = await node.submit_job(
            model,
            inputs,
            runtime=runtime,
            redundancy=_or(_int_field(body, "redundancy"), 1),
            max_retries=_int_field(body, "max_retries", 2) or 0,
            max_price=max_price,
            deadline_ms=_int_field(body, "deadline_ms"),
            model_name=str(body.get("model_name", "model"))[:200],
        )
        return Response.json({"job_id": job_id.hex()}, 201)

    async def list_jobs(request: Request) -> Response:
        return Response.json(
            {"jobs": [job_view(r, node.job_phase(r)) for r in node.jobs.values()][-200:]}
        )

    async def job(request: Request) -> Response:
        rest = request.path[len("/api/jobs/") :]
        if rest.endswith("/result"):
            record = node.job_record(rest[: -len("/result")])
            if record.done is None:
                raise HttpError(409, "the job has not finished; wait for it first")
            outputs = node.job_outputs(record)
            if outputs is None:
                if record.output_hash is not None or record.output_names:
                    raise HttpError(
                        409,
                        f"the job's output ({record.done.status}) is no longer kept: a node "
                        "keeps its newest outputs (2 GiB on disk), and one it could not "
                        "write to disk is lost at a restart; submit the job again",
                    )
                raise HttpError(
                    409, f"the job has no output ({record.done.status}: {record.done.reason})"
                )
            taken = request.query.get("unverified", ["0"])[0] in ("1", "true", "yes")
            if record.done.status != JobStatus.VERIFIED and not taken:
                # what no majority or known answer agreed on is not handed over as if it
                # were: two free keys could choose it (review round 58, F2)
                raise HttpError(
                    409,
                    f"the job's output is {record.done.status}, not verified "
                    f"({record.done.reason}); ask with unverified=1 (aimx job result "
                    "--unverified) to take it anyway",
                )
            return Response.json(
                {
                    "job_id": record.job_id.hex(),
                    "status": record.done.status,
                    "outputs": {n: encode_array(a) for n, a in outputs.items()},
                }
            )
        record = node.job_record(rest)
        wait = request.query.get("wait", ["0"])[0]
        try:
            wait_s = min(MAX_WAIT_S, max(0.0, float(wait)))
        except ValueError:
            raise HttpError(400, "wait must be a number of seconds") from None
        until = request.query.get("until", ["done"])[0]
        if until not in ("done", "closed"):
            raise HttpError(400, "until must be done or closed")

        def finished() -> bool:
            return record.closed if until == "closed" else record.done is not None

        with trio.move_on_after(wait_s):
            while not finished():
                await record.changed.wait()
        return Response.json(job_view(record, node.job_phase(record)))

    async def balance(request: Request) -> Response:
        rest = request.path[len("/api/ledger/balance") :].strip("/")
        who = _account(rest) if rest else node.me
        state = node.ledger.state
        account = state.account(who)
        return Response.json(
            {
                "account": protocol.peer_id(who),
                "height": state.height,
                "balance": account.balance,
                "stake": account.stake,
                "reputation": float(state.reputation(who)),
            }
        )

    settings = node.config.coordinator
    limits = FaucetLimits(settings.faucet_per_minute, settings.faucet_account_per_minute)

    async def faucet(request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("account"), str):
            raise HttpError(400, 'body must be {"account": peer id, "amount": micro-credits}')
        who = _account(body["account"])
        amount = _int_field(body, "amount", settings.faucet_amount)
        assert amount is not None
        if "coordinator" not in node.roles:
            raise RoleMissing(
                "only a coordinator runs the faucet: ask the coordinator's node "
                "(aimx faucet --coordinator-dir ITS_DATA_DIR)"
            )
        if not faucet_enabled(node.config):
            raise HttpError(
                403,
                f"the faucet is off on chain {node.config.chain_id!r}: it runs on devnet "
                "chains (aimx-devnet...) or with coordinator.faucet = true in config.toml",
            )
        now_ms = node.now_ms()
        wait_ms = limits.wait_ms(who, now_ms)
        if wait_ms:
            raise HttpError(
                429,
                f"faucet rate limit (coordinator.faucet_per_minute "
                f"{settings.faucet_per_minute}, faucet_account_per_minute "
                f"{settings.faucet_account_per_minute}): try again in {wait_ms / 1000:.1f} s",
                {"retry-after": str(math.ceil(wait_ms / 1000))},
            )
        node.faucet(who, amount)
        limits.take(who, now_ms)
        return Response.json({"account": protocol.peer_id(who), "amount": amount}, 202)

    async def stake(request: Request) -> Response:
        body = request.json()
        amount = _int_field(body if isinstance(body, dict) else {}, "amount")
        if amount is None:
            raise HttpError(400, 'body must be {"amount": micro-credits}')
        node.stake(amount)
        return Response.json({"amount": amount}, 202)

    async def why(request: Request) -> Response:
        if node.provider is None:
            raise RoleMissing("this node is not a contributor")
        report = node.provider.why_no_jobs(node.now_ms())
        return Response.json(
            {
                "since_ms": report.since_ms,
                "announcements": report.announcements,
                "outcomes": dict(report.outcomes),
                "hints": list(report.hints),
            }
        )

    async def providers(request: Request) -> Response:
        capability_class = request.query.get("class", ["onnx.cpu.m1"])[0]
        found = await node.providers_for(capability_class, fresh=True)
        return Response.json(
            {"class": capability_class, "providers": [protocol.peer_id(p) for p in found]}
        )

    async def metrics(request: Request) -> Response:
        m = node.metrics
        m.peers.set(len(node.net.connected_peers()))
        state = node.ledger.state
        m.stake.set(state.account(node.me).stake)
        m.reputation.set(float(state.reputation(node.me)))
        m.earned.set(node.earned)
        m.fault.set(0 if node.fault is None else 1)
        if node.provider is not None:
            phases = {str(p): 0 for p in WorkPhase if p != WorkPhase.CLOSED}
            for w in node.provider.work.values():
                phases[str(w.phase)] = phases.get(str(w.phase), 0) + 1
            for phase, count in phases.items():
                m.work.labels(phase).set(count)
        return Response(200, node.metrics.render(), "text/plain; version=0.0.4")

    async def pause(request: Request) -> Response:
        body = request.json() if request.body else {}
        if not isinstance(body, dict) or not isinstance(body.get("reason", ""), str):
            raise HttpError(400, 'the body must be {} or {"reason": "..."}')
        node.pausing.pause(body.get("reason", ""))
        return Response.json(availability_view(node))

    async def resume(request: Request) -> Response:
        node.pausing.resume()
        return Response.json(availability_view(node))

    sources: dict[str, Source] = dict(config_sources or {})

    async def get_config(request: Request) -> Response:
        return Response.json(config_view(node, sources))

    async def put_config(request: Request) -> Response:
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "application/json":
            raise HttpError(415, "a PUT body must be JSON with content-type application/json")
        try:
            body = json.loads(request.body or b"null")
        except (ValueError, RecursionError):
            raise HttpError(400, "the body is not JSON (or is nested too deeply)") from None
        if not isinstance(body, dict) or not body:
            raise HttpError(400, 'the body must be an object of settings: {"contributor": ...}')
        changes = flatten(body)
        try:
            config = apply_changes(node.config, changes)
        except ConfigError as exc:
            raise HttpError(400, str(exc)) from None
        if data_dir is None:
            raise HttpError(409, "this node has no data directory to write config.toml to")
        try:
            await trio.to_thread.run_sync(write_changes, data_dir, changes)
        except (OSError, ConfigError) as exc:
            raise HttpError(500, f"cannot write config.toml in {data_dir}: {exc}") from None
        node.reconfigure(config)
        overridden = sorted(k for k in changes if sources.get(k) in ("env", "flag"))
        for key in changes:
            sources[key] = "file"
        answer = config_view(node, sources)
        # an environment variable or option set this key at start: it wins at the next one
        answer["overridden_at_start"] = overridden
        return Response.json(answer)

    small = SMALL_BODY_BYTES  # only a job submission carries megabytes
    router.add("GET", "/api/status", guarded(status))
    router.add("POST", "/api/pause", guarded(pause), max_body_bytes=small)
    router.add("POST", "/api/resume", guarded(resume), max_body_bytes=small)
    router.add("GET", "/api/config", guarded(get_config))
    router.add("PUT", "/api/config", guarded(put_config), max_body_bytes=small)
    router.add("POST", "/api/jobs", guarded(submit))
    router.add("GET", "/api/jobs", guarded(list_jobs))
    router.add("GET", "/api/jobs/", guarded(job))
    router.add("GET", "/api/ledger/balance", guarded(balance))
    router.add("GET", "/api/ledger/balance/", guarded(balance))
    router.add("POST", "/api/faucet", guarded(faucet), max_body_bytes=small)
    router.add("POST", "/api/stake", guarded(stake), max_body_bytes=small)
    router.add("GET", "/api/provider/why", guarded(why))
    router.add("GET", "/api/providers", guarded(providers))
    router.add("GET", "/metrics", guarded(metrics))
    dashboard = Dashboard(node, api=router, data_dir=data_dir)

    async def dashboard_token(request: Request) -> Response:
        # this run's dashboard token (never the API's), for `aimx node dashboard`'s link
        return Response.json({"token": dashboard.token, "api_port": node.config.api_port})

    router.add("GET", "/api/dashboard/token", dashboard_token)
    return dashboard.mount(owner_only(router, token))
