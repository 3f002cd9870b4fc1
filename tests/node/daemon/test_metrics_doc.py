"""The metrics spec, the exporter and the Grafana dashboard agree: specs/metrics.md's
table is the registry's, ``/metrics`` shows each metric, and every metric the dashboard
queries exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

from node.daemon._metrics import NodeMetrics, metrics_doc

ROOT = Path(__file__).parents[3]
BEGIN = "<!-- generated from node/daemon/_metrics.py (metrics_doc): do not edit below -->"
END = "<!-- end of generated metrics -->"


def test_the_spec_lists_every_metric() -> None:
    spec = (ROOT / "specs" / "metrics.md").read_text()
    table = spec.partition(BEGIN)[2].partition(END)[0].strip()
    assert table == metrics_doc(), "specs/metrics.md is stale: paste metrics_doc() into it"


def test_the_exporter_shows_every_metric() -> None:
    metrics = NodeMetrics()
    text = metrics.render().decode()
    for name, kind, _, _ in metrics.described():
        assert f"# TYPE {name} {kind}" in text, name


def test_every_metric_the_grafana_dashboard_queries_exists() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "aimx-node.json").read_text())
    exported = {name for name, _, _, _ in NodeMetrics().described()}
    labels = {
        name: set(lbls) | {"instance", "job"} for name, _, lbls, _ in NodeMetrics().described()
    }
    queried: set[str] = set()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            names = set(re.findall(r"\baimx_[a-z_]+\b", expr))
            assert names, expr
            queried |= names
            for name in names:
                assert name in exported, f"{panel['title']!r} queries {name}, which is not exported"
                for used in re.findall(r"by \(([a-z_, ]+)\)", expr):
                    for label in (x.strip() for x in used.split(",")):
                        assert label in labels[name], f"{name} has no label {label!r}"
    variable = dashboard["templating"]["list"][1]["definition"]
    assert re.search(r"aimx_[a-z_]+", variable).group(0) in exported  # type: ignore[union-attr]
    assert len(queried) >= 15  # built on the metrics, not on two of them
