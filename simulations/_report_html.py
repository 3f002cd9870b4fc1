"""The report's HTML: escaping and number formatting, tables, the self-contained page and
the one-run report body; :mod:`simulations.report` re-exports every name here (``compare``
and ``sweep`` build their pages with the same helpers).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from typing import Any

from ._report_data import Run, detections

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
td:first-child, th:first-child { text-align: left; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
img { max-width: 100%; }
.warn { background: #fff3cd; border: 1px solid #e0c36c; padding: 0.5em 1em; }
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: object) -> str:
    """A summary value for a table: floats to 4 significant digits, the rest as text."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    return str(value)


def flatten(summary: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested summary as dotted keys (``jobs.verified``), leaves only, in order."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def img_tag(data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{encoded}">'


def html_table(header: Sequence[str], rows: Iterable[Sequence[str]], raw: bool = False) -> str:
    """A table; cells are escaped unless ``raw`` (then the caller escaped them)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if raw else esc(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>"
        f"<body><h1>{esc(title)}</h1>\n{body}\n</body></html>\n"
    )


#: The headline figures at the top of a report, (dotted summary key, what it is).
HEADLINE: tuple[tuple[str, str], ...] = (
    ("jobs.submitted", "jobs submitted"),
    ("jobs.verified", "jobs verified"),
    ("jobs.failed", "jobs failed"),
    ("jobs.correct_accepted", "correct results accepted"),
    ("jobs.wrong_accepted", "wrong results accepted"),
    ("latency_s.p50", "submit to result p50 (s)"),
    ("latency_s.p90", "submit to result p90 (s)"),
    ("latency_s.p99", "submit to result p99 (s)"),
    ("bids_per_job.mean", "bids per job (mean)"),
    ("compute.ratio", "compute / honest minimum"),
    ("earnings.gini", "Gini of earnings (honest providers)"),
    ("earnings.honest_mean", "honest contributor earned (mean)"),
    ("earnings.cheater_mean", "cheater earned (mean)"),
    ("ledger.height", "ledger height"),
    ("ledger.conserved", "credits conserved"),
    ("events", "events"),
    ("sim_seconds", "simulated seconds"),
    ("wall_seconds", "wall seconds"),
    ("peak_rss_mb", "peak RSS (MB)"),
    ("trace_hash", "trace hash"),
)


def adversary_rows(run: Run) -> list[list[str]]:
    """The summary's adversaries, with how many of each kind delivered a wrong result
    (providers.csv; blank for kinds that are not providers)."""
    adversaries = run.summary.get("adversaries") or {}
    wrong: dict[str, int] = {}
    for d in detections(run):
        wrong[d.kind] = wrong.get(d.kind, 0) + d.wrong
    rows = []
    for kind, figures in sorted(adversaries.items()):
        if not isinstance(figures, dict):
            continue
        rows.append(
            [kind, fmt(figures.get("count")), str(wrong[kind]) if kind in wrong else ""]
            + [
                fmt(figures.get(k))
                for k in ("detected", "median_jobs_to_detection", "median_s_to_detection")
            ]
        )
    return rows


def verify_cache_note(summary: dict[str, Any]) -> str:
    if summary.get("verify_cache"):
        return (
            '<p class="warn"><b>Verification cache on:</b> a signature check of exact bytes '
            "known to pass (checked before, or signed by the run itself over those bytes) "
            "was answered from a cache (the scenario asked for it); other bytes were checked "
            "for real. Every message is still signed.</p>"
        )
    return ""


def render_report(run: Run, plots: Sequence[tuple[str, str, bytes]]) -> str:
    """The report page of one run; ``plots`` are (stem, caption, PNG bytes)."""
    s = run.summary
    flat = flatten(s)
    title = f"Simulation report: {s.get('scenario', run.path.name)}, seed {s.get('seed')}"
    parts = [verify_cache_note(s)]
    parts.append("<h2>Summary</h2>")
    parts.append(
        html_table(
            ["figure", "value"], [[text, fmt(flat[key])] for key, text in HEADLINE if key in flat]
        )
    )
    rows = adversary_rows(run)
    if rows:
        parts.append("<h2>Adversaries</h2>")
        parts.append(
            html_table(
                [
                    "kind",
                    "count",
                    "delivered a wrong result",
                    "detected",
                    "median jobs to detection",
                    "median s to detection",
                ],
                rows,
            )
        )
    parts.append("<h2>Plots</h2>")
    for stem, caption, data in plots:
        parts.append(
            f"<figure>{img_tag(data, stem)}<figcaption>{esc(caption)}</figcaption></figure>"
        )
    parts.append("<h2>Scenario</h2>")
    parts.append(f"<pre>{esc(run.scenario_text or '(scenario.toml missing)')}</pre>")
    parts.append("<h2>All summary figures</h2>")
    parts.append(html_table(["key", "value"], [[k, fmt(v)] for k, v in flat.items()]))
    return html_page(title, "\n".join(p for p in parts if p))
