"""Hostile soak: strangers' messages at every node of a real devnet while honest jobs run.

A devnet (separate processes, py-libp2p on loopback) of a coordinator, a workspace and
``--contributors`` contributors. This process opens hostile peers as real libp2p hosts
(``node.testing.HostilePeer`` over ``open_libp2p_network``) and, for ``--seconds``, sends
their shots (random bytes, random msgpack, validly signed messages with fields at their
edges, replays) on every protocol and topic to every node, while ``--in-flight`` honest
jobs of the sandbox's tiny model are submitted from the workspace at a time.

Each node bans a key that keeps misbehaving (the coordinator too: only being banned is
spared to it); a hostile key stops shooting at a node that refuses it, and once every
node refuses it, it is dropped for a fresh one; at most ``--keys`` keys are used.

The baseline is the honest submit-to-result p50 in the same run, before the attack:
``--baseline-jobs`` jobs with no attacker. At the end the coordinator is stopped first,
the replicas are given time to reach its height, every node is stopped and
``aimx ledger verify`` runs on each data directory.

Usage: ``python bench/hostile_soak.py [--seconds 60] [--contributors 3] [--in-flight 4]``.
Prints a table, then one JSON line per figure.
"""

from __future__ import annotations

import argparse
import faulthandler
import functools
import hashlib
import json
import logging
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path, and bench/ledger.py and
# bench/sandbox.py would shadow the packages of the same names: drop it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import httpx  # noqa: E402
import nacl.signing  # noqa: E402
import trio  # noqa: E402

import protocol  # noqa: E402
from node._runinfo import read_runinfo  # noqa: E402
from node.api import ApiError, Client  # noqa: E402
from node.api._auth import read_token  # noqa: E402
from node.daemon.genesis import GENESIS_PROTOCOL  # noqa: E402
from node.devnet import (  # noqa: E402
    CHAIN_ID,
    DevNode,
    bootstrap_address,
    running_devnet,
    statuses,
    stop,
    tiny_model_and_inputs,
    verify_ledgers,
    wait_ready,
)
from node.net import NetworkError  # noqa: E402
from node.net.libp2p_host import Libp2pConfig, open_libp2p_network, wall_ms  # noqa: E402
from node.testing import HostilePeer, HostileReport  # noqa: E402

BLOCK_MS = 100
BID_WINDOW_MS = 500
#: Shots per target per round; a round's requests end within ``SHOT_TIMEOUT_S`` each.
SHOTS_PER_TARGET = 100
SHOT_TIMEOUT_S = 2.0
CONCURRENCY = 16
#: A round against one key's live targets ends after this; a probe (is it refused?) too.
ROUND_S = 3.0
PROBE_S = 2.0
#: Past the attack's end, the longest a hostile host may take to start or close; past
#: twice this, the honest jobs stop and the run goes on without the attacker's thread.
GRACE_S = 15.0
#: A hostile host that has not started (or closed) within this is given up for the next key.
START_S = 15.0
#: Honest jobs that are not done within this count as failed.
JOB_TIMEOUT_S = 60.0
#: How long the replicas get to reach the stopped coordinator's height.
CATCH_UP_S = 30.0


@dataclass
class HostileStats:
    #: One report per hostile key.
    reports: list[HostileReport] = field(default_factory=list)
    #: Keys dropped because every node refused them.
    keys_refused: int = 0
    rounds: int = 0
    elapsed: float = 0.0
    errors: list[str] = field(default_factory=list)

    def total(self, name: str) -> int:
        return sum(int(getattr(r, name)) for r in self.reports)

    def by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.reports:
            for kind, n in r.by_kind.items():
                out[kind] = out.get(kind, 0) + n
        return dict(sorted(out.items()))


@dataclass
class HonestStats:
    submitted: int = 0
    verified: int = 0
    failed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def hostile_key(i: int) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(f"aimx-hostile-soak-{i}".encode()).digest())


# --- the attacker (trio, in a thread of its own) ----------------------------------------


async def _refuses(net: Any, target: bytes, refused: set[bytes]) -> None:
    """Add ``target`` to ``refused`` if it refuses this peer now (a ban resets its streams
    or its connection; no answer in time counts as refused)."""
    with trio.move_on_after(PROBE_S):
        try:
            await net.request(target, GENESIS_PROTOCOL, b"", timeout=PROBE_S)
        except NetworkError as exc:
            if type(exc).__name__ not in ("RemoteError", "MessageTooLarge"):
                refused.add(target)
        return
    refused.add(target)


async def _one_key(
    index: int,
    seed: int,
    nodes: list[tuple[str, bytes, str]],
    boot: str,
    classes: list[str],
    deadline: float,
    stats: HostileStats,
    scope: trio.CancelScope,
) -> None:
    """Attack with hostile key ``index`` until every node refuses it, or the deadline
    (``scope``'s deadline, the host's start's until it started, is moved to it)."""
    key = hostile_key(index)
    config = Libp2pConfig(
        chain_id=CHAIN_ID,
        listen=("/ip4/127.0.0.1/tcp/0",),
        bootstrap=(boot,),
        libp2p_log_level=logging.CRITICAL,
    )
    report = HostileReport()
    stats.reports.append(report)
    async with open_libp2p_network(key, config) as net:
        scope.deadline = deadline + GRACE_S
        # cancelled at the deadline only once the host runs: py-libp2p's services raise
        # LifecycleError when cancelled while they start
        with trio.move_on_at(deadline):
            async with trio.open_nursery() as nursery:
                await _shoot(index, seed, net, key, nodes, classes, stats, report, nursery)
                nursery.cancel_scope.cancel()
        # its close is bounded as its start was
        scope.deadline = min(scope.deadline, trio.current_time() + START_S)


async def _shoot(
    index: int,
    seed: int,
    net: Any,
    key: nacl.signing.SigningKey,
    nodes: list[tuple[str, bytes, str]],
    classes: list[str],
    stats: HostileStats,
    report: HostileReport,
    nursery: trio.Nursery,
) -> None:
    for _, _, address in nodes:
        with trio.move_on_after(PROBE_S):
            try:
                await net.connect(address)
            except NetworkError as exc:
                stats.errors.append(f"key {index}: connect {address}: {exc}")
    peer = HostilePeer(
        net, key, CHAIN_ID, seed=seed + index, capability_classes=classes, now_ms=wall_ms
    )
    await nursery.start(peer.watch)
    live = [k for _, k, _ in nodes]
    while live:
        with trio.move_on_after(ROUND_S):
            async with trio.open_nursery() as shots:
                for target in live:
                    shots.start_soon(
                        functools.partial(
                            peer.attack,
                            [target],
                            SHOTS_PER_TARGET,
                            concurrency=CONCURRENCY,
                            timeout=SHOT_TIMEOUT_S,
                            report=report,
                        )
                    )
        stats.rounds += 1
        refused: set[bytes] = set()
        async with trio.open_nursery() as probes:
            for target in live:
                probes.start_soon(_refuses, net, target, refused)
        live = [k for k in live if k not in refused]
    stats.keys_refused += 1


async def attack(
    nodes: list[tuple[str, bytes, str]],
    boot: str,
    classes: list[str],
    seconds: float,
    max_keys: int,
    seed: int,
    stats: HostileStats,
) -> None:
    """Hostile keys in turn, each until the nodes refuse it, for ``seconds`` (bounded:
    shooting is cancelled at the deadline, a host's start and close are bounded)."""
    start = trio.current_time()
    deadline = start + seconds
    try:
        # a key's host start and close are not under the deadline; this bounds them too
        with trio.move_on_at(deadline + GRACE_S) as overall:
            for index in range(max_keys):
                if trio.current_time() >= deadline:
                    break
                # a host that does not start in time is given up for the next key
                with trio.CancelScope(deadline=trio.current_time() + START_S) as scope:
                    try:
                        await _one_key(index, seed, nodes, boot, classes, deadline, stats, scope)
                    except Exception as exc:  # py-libp2p's own, when cancelled as it starts
                        stats.errors.append(f"key {index}: {exc!r}"[:200])
                if scope.cancelled_caught and trio.current_time() < deadline:
                    stats.errors.append(f"key {index}: its host did not start in {START_S:g} s")
        if overall.cancelled_caught:
            stats.errors.append(f"a hostile host did not start or close within {GRACE_S:g} s")
    finally:
        stats.elapsed = trio.current_time() - start


# --- honest jobs (threads, through the workspace's API) ---------------------------------


def honest_jobs(
    ws: DevNode,
    in_flight: int,
    stats: HonestStats,
    *,
    count: int | None = None,
    until: threading.Event | None = None,
) -> None:
    """Submit jobs ``in_flight`` at a time: ``count`` of them, or until ``until`` is set."""
    path, inputs = tiny_model_and_inputs()
    lock = threading.Lock()
    left = [count if count is not None else 1 << 30]

    def worker() -> None:
        with Client.for_data_dir(ws.data_dir) as client:
            while True:
                with lock:
                    if left[0] <= 0 or (until is not None and until.is_set()):
                        return
                    left[0] -= 1
                    stats.submitted += 1
                t0 = time.perf_counter()
                try:
                    job_id = client.submit(path, inputs, redundancy=1)
                    status = client.wait(job_id, timeout_s=JOB_TIMEOUT_S)
                    key = str(status.get("status"))
                    if key == "failed":
                        key += ": " + str(status.get("reason"))
                    elif not status.get("done"):
                        key = "not done in time"
                except ApiError as exc:
                    key = f"api error: {str(exc)[:80]}"
                took = time.perf_counter() - t0
                with lock:
                    stats.outcomes[key] = stats.outcomes.get(key, 0) + 1
                    if key == "verified":
                        stats.verified += 1
                        stats.latencies.append(took)
                    else:
                        stats.failed += 1

    threads = [threading.Thread(target=worker) for _ in range(in_flight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# --- what the nodes report ----------------------------------------------------------------


def metrics(node: DevNode) -> dict[str, float]:
    """The node's ``/metrics`` (its token from its data directory), unlabelled samples."""
    out: dict[str, float] = {}
    try:
        info = read_runinfo(node.data_dir)
        token = read_token(node.data_dir) or ""
        response = httpx.get(
            info.api_url.rstrip("/") + "/metrics",
            headers={"authorization": f"Bearer {token}"},
            timeout=10.0,
        )
        response.raise_for_status()
    except Exception:
        return out
    for line in response.text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def stop_and_verify(nodes: list[DevNode]) -> tuple[dict[str, dict[str, Any]], int]:
    """Stop the coordinator, let the replicas reach its height (bounded), stop them, and
    verify every ledger. Returns the verifications and the coordinator's final height."""
    coordinator = next(n for n in nodes if n.name == "coordinator")
    stop([coordinator])
    final = verify_ledgers([coordinator])["coordinator"].get("height", -1)
    others = [n for n in nodes if n is not coordinator]
    deadline = time.monotonic() + CATCH_UP_S
    while time.monotonic() < deadline:
        seen = statuses(others)
        if all(seen.get(n.name, {}).get("height", -1) >= final for n in others):
            break
        time.sleep(0.25)
    stop(others)
    return verify_ledgers(nodes), int(final)


# --- the run --------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    baseline = HonestStats()
    during = HonestStats()
    hostile = HostileStats()
    with tempfile.TemporaryDirectory(prefix="aimx-soak-") as tmp:
        root = Path(str(args.keep) if args.keep is not None else tmp)
        workspace_extra = f"[requester]\nbid_window_ms = {BID_WINDOW_MS}\ndeadline_ms = 60000\n"
        with running_devnet(
            root,
            args.contributors,
            workspace_extra=workspace_extra,
            block_interval_ms=BLOCK_MS,
            contributor_extra=lambda i: "max_concurrency = 8\nwarm_workers = 2\n",
        ) as nodes:
            wait_ready(nodes)
            ws = next(n for n in nodes if n.name == "workspace")
            coordinator = next(n for n in nodes if n.name == "coordinator")
            # warm up (first connections, warm workers), then the baseline: no attacker
            honest_jobs(ws, args.in_flight, HonestStats(), count=args.warmup_jobs)
            honest_jobs(ws, args.in_flight, baseline, count=args.baseline_jobs)

            seen = statuses(nodes)
            classes = sorted(
                {
                    c
                    for body in seen.values()
                    for c in body.get("provider", {}).get("capability_classes", [])
                }
            )
            targets = []
            for n in nodes:
                assert n.info is not None
                targets.append(
                    (n.name, protocol.public_key_of(n.info.peer_id), bootstrap_address(n.info))
                )
            assert coordinator.info is not None
            boot = bootstrap_address(coordinator.info)

            done = threading.Event()
            stop_timer = threading.Timer(args.seconds + 2 * GRACE_S, done.set)
            started = time.monotonic()

            def attacker() -> None:
                try:
                    trio.run(
                        attack,
                        targets,
                        boot,
                        classes,
                        args.seconds,
                        args.keys,
                        args.seed,
                        hostile,
                    )
                except Exception as exc:  # reported, and the run goes on to its checks
                    hostile.errors.append(f"attacker ended: {exc!r}")
                finally:
                    done.set()

            thread = threading.Thread(target=attacker, daemon=True)
            thread.start()
            stop_timer.start()
            honest_jobs(ws, args.in_flight, during, until=done)
            stop_timer.cancel()
            thread.join(GRACE_S)
            if thread.is_alive():
                hostile.errors.append("the attacker's thread did not stop: left behind")
                faulthandler.dump_traceback(sys.stderr)
                hostile.elapsed = hostile.elapsed or time.monotonic() - started
            alive = {n.name: n.alive() for n in nodes}
            node_metrics = {n.name: metrics(n) for n in nodes}
            node_status = statuses(nodes)
            verified, final_height = stop_and_verify(nodes)
    return {
        "baseline": baseline,
        "during": during,
        "hostile": hostile,
        "alive": alive,
        "metrics": node_metrics,
        "status": node_status,
        "verified": verified,
        "final_height": final_height,
    }


def line(metric: str, value: float, baseline: float | None) -> str:
    ratio = round(value / baseline, 6) if baseline else None
    return json.dumps(
        {
            "bench": "hostile_soak",
            "metric": metric,
            "value": round(value, 6),
            "baseline": None if baseline is None else round(baseline, 6),
            "ratio": ratio,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--contributors", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--baseline-jobs", type=int, default=20)
    parser.add_argument("--keys", type=int, default=500, help="most hostile keys to use")
    parser.add_argument(
        "--warmup-jobs", type=int, default=40, help="honest jobs before the baseline's"
    )
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep the nodes' data dirs (and logs) here"
    )
    args = parser.parse_args()
    r = run(args)
    h: HostileStats = r["hostile"]
    b: HonestStats = r["baseline"]
    d: HonestStats = r["during"]
    alive: dict[str, bool] = r["alive"]
    verified: dict[str, dict[str, Any]] = r["verified"]
    banned = {name: m.get("aimx_peers_banned_total", 0.0) for name, m in r["metrics"].items()}
    bad = {name: m.get("aimx_bad_messages_total", 0.0) for name, m in r["metrics"].items()}
    heights = {name: v.get("height") for name, v in verified.items()}
    roots = {name: v.get("state_root") for name, v in verified.items()}
    same = len(set(heights.values())) == 1 and len(set(roots.values())) == 1
    ledgers_ok = all(v.get("ok") for v in verified.values())
    sent = h.total("sent")
    per_s = sent / h.elapsed if h.elapsed else 0.0
    p50_base, p50_attack = percentile(b.latencies, 0.5), percentile(d.latencies, 0.5)
    p99_attack = percentile(d.latencies, 0.99)

    print(
        f"hostile_soak: {len(alive)} daemons ({args.contributors} contributors), "
        f"{args.seconds:g} s attack, {args.in_flight} honest jobs in flight, "
        f"block {BLOCK_MS} ms"
    )
    print(f"  hostile shots sent       {sent} in {h.elapsed:.1f} s ({per_s:.0f}/s)")
    print(
        f"    requests {h.total('requests')} (answered {h.total('answered')}, "
        f"failed/refused {h.total('failed')}), published {h.total('published')}, "
        f"rounds {h.rounds}"
    )
    print(f"    by kind                {h.by_kind()}")
    print(f"  hostile keys used        {len(h.reports)} ({h.keys_refused} refused by every node)")
    print(f"  daemons alive at end     {sum(alive.values())} of {len(alive)} {alive}")
    print(f"  peers banned (/metrics)  {sum(banned.values()):.0f} {banned}")
    print(f"  bad messages (/metrics)  {sum(bad.values()):.0f} {bad}")
    print(f"  baseline honest jobs     {b.submitted} submitted, {b.outcomes}")
    print(f"  honest jobs in attack    {d.submitted} submitted, {d.outcomes}")
    print(f"  submit->result p50       {p50_attack:.3f} s in attack, {p50_base:.3f} s baseline")
    print(f"  submit->result p99       {p99_attack:.3f} s in attack")
    for name, v in verified.items():
        state = "ok" if v.get("ok") else f"FAILED {v.get('error')}"
        print(
            f"  ledger verify {name:14s} {state}, height {v.get('height')}, "
            f"root {str(v.get('state_root'))[:16]}"
        )
    print(f"  heights and roots equal  {same} (coordinator stopped at {r['final_height']})")
    for err in h.errors[:10]:
        print(f"  attacker note: {err}")

    for metric, value, base in (
        ("hostile_shots_sent", sent, None),
        ("hostile_shots_per_s", per_s, None),
        ("hostile_keys_used", len(h.reports), None),
        ("hostile_keys_refused", h.keys_refused, None),
        ("peers_banned", sum(banned.values()), None),
        ("daemons_alive", sum(alive.values()), len(alive)),
        ("honest_jobs_submitted", d.submitted, None),
        ("honest_jobs_verified", d.verified, d.submitted),
        ("honest_jobs_failed", d.failed, None),
        ("submit_to_result_p50_s", p50_attack, p50_base),
        ("ledgers_verified", sum(bool(v.get("ok")) for v in verified.values()), len(verified)),
        ("ledgers_equal", float(same), 1.0),
    ):
        print(line(metric, float(value), None if base is None else float(base)))
    ok = all(alive.values()) and ledgers_ok and same and d.verified > 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
