"""Prometheus metrics of one node, in a registry of its own (never the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics import MetricWrapperBase


class NodeMetrics:
    """The counters and gauges one daemon exports on ``/metrics``."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.messages = Counter(
            "aimx_messages_received", "Marketplace messages received", ["kind"], registry=r
        )
        self.bad_messages = Counter(
            "aimx_bad_messages", "Invalid or out-of-place messages from peers", registry=r
        )
        self.peers_banned = Counter("aimx_peers_banned", "Peers banned for misbehaving", registry=r)
        self.sends_failed = Counter(
            "aimx_sends_failed", "Messages that could not be delivered", registry=r
        )
        self.sends_dropped = Counter(
            "aimx_sends_dropped",
            "Messages not sent: past the bounds on sends in flight, or to a peer not reached",
            registry=r,
        )
        self.task_errors = Counter(
            "aimx_task_errors",
            "Tasks of the node that failed (logged, the node goes on)",
            registry=r,
        )
        self.jobs_submitted = Counter("aimx_jobs_submitted", "Jobs submitted here", registry=r)
        self.jobs_done = Counter("aimx_jobs_done", "Jobs ended, by status", ["status"], registry=r)
        self.runs = Counter("aimx_runs", "Sandbox runs, by outcome", ["outcome"], registry=r)
        self.txs = Counter("aimx_txs", "Ledger transactions, by kind", ["kind"], registry=r)
        self.height = Gauge("aimx_ledger_height", "Committed ledger height", registry=r)
        self.balance = Gauge("aimx_balance_micro", "This node's balance", registry=r)
        self.running = Gauge("aimx_running_jobs", "Replicas running here", registry=r)
        self.peers = Gauge("aimx_connected_peers", "Open connections", registry=r)
        self.paused = Gauge(
            "aimx_paused", "1 while this contributor is paused (bids on nothing)", registry=r
        )
        self.pauses = Counter(
            "aimx_pauses", "Pauses and reason changes, by cause", ["cause"], registry=r
        )
        self.handed_back = Counter(
            "aimx_handed_back", "Running replicas aborted and handed back", registry=r
        )
        self.stake = Gauge("aimx_stake_micro", "This node's stake", registry=r)
        self.reputation = Gauge(
            "aimx_reputation", "This node's reputation (0 to 1) on the ledger", registry=r
        )
        self.earned = Gauge(
            "aimx_earned_micro", "Micro-credits paid to this contributor since start", registry=r
        )
        self.fault = Gauge(
            "aimx_fault", "1 while the ledger cannot be written (no new work)", registry=r
        )
        self.work = Gauge(
            "aimx_provider_work", "This contributor's work, by phase", ["phase"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def described(self) -> list[tuple[str, str, tuple[str, ...], str]]:
        """Every metric as exported: ``(name, type, labels, help)`` (counters with their
        ``_total``), in the order made: what specs/metrics.md lists."""
        out = []
        for metric in vars(self).values():
            if isinstance(metric, MetricWrapperBase):
                kind = str(metric._type)
                name = str(metric._name) + ("_total" if kind == "counter" else "")
                labels = tuple(str(x) for x in metric._labelnames)
                out.append((name, kind, labels, str(metric._documentation)))
        return out


def metrics_doc() -> str:
    """specs/metrics.md's table (tests/node/daemon/test_metrics_doc.py checks it)."""
    lines = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for name, kind, labels, text in NodeMetrics().described():
        lines.append(f"| `{name}` | {kind} | {', '.join(labels) or '-'} | {text} |")
    return "\n".join(lines)
