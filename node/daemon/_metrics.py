"""Prometheus metrics of one node, in a registry of its own (never the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


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
        self.jobs_submitted = Counter("aimx_jobs_submitted", "Jobs submitted here", registry=r)
        self.jobs_done = Counter("aimx_jobs_done", "Jobs ended, by status", ["status"], registry=r)
        self.runs = Counter("aimx_runs", "Sandbox runs, by outcome", ["outcome"], registry=r)
        self.txs = Counter("aimx_txs", "Ledger transactions, by kind", ["kind"], registry=r)
        self.height = Gauge("aimx_ledger_height", "Committed ledger height", registry=r)
        self.balance = Gauge("aimx_balance_micro", "This node's balance", registry=r)
        self.running = Gauge("aimx_running_jobs", "Replicas running here", registry=r)
        self.peers = Gauge("aimx_connected_peers", "Open connections", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
