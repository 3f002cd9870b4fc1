"""What the dashboard costs a node: first paint of the page, and the daemon's CPU time
with its live updates flowing to an open page against none.

A devnet (separate processes, py-libp2p on loopback) of a coordinator, a workspace and one
contributor. Headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright)
opens the contributor's dashboard with the login link of ``aimx node dashboard``.

1. First paint: ``first-contentful-paint`` of the page (``--loads`` loads, each in a fresh
   browser context so nothing is cached), and the time to the first rendered snapshot.
2. CPU: the contributor daemon's process CPU time (``/proc/PID/stat``, user + system,
   the sandbox's workers are other processes) over ``--seconds`` with no page open, then
   over ``--seconds`` with one page open and its event stream flowing, ``--rounds``
   times; the difference of the means is what the live updates cost, as a share of one
   core. The node is idle (no jobs) in both, so the only difference is the dashboard; the
   idle node's own background (blocks every 200 ms) varies by about as much, so the
   daemon's own count of the CPU time its snapshots took (``cpu_ms_per_snapshot``) is
   printed too: one snapshot per second costs that many ms a second.

Usage: ``python bench/dashboard.py [--seconds 60] [--loads 5] [--rounds 2]``. Prints a table, then
one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, and bench/sandbox.py and
# bench/ledger.py would shadow the packages of those names.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from node.api.dashboard import TICK_S  # noqa: E402
from node.devnet import DevNode, running_devnet, wait_ready  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
DASHBOARD_COMMAND = (sys.executable, "-m", "node", "node", "dashboard", "--json", "--no-open")
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (not its children)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def login_link(member: DevNode) -> str:
    done = subprocess.run(
        [*DASHBOARD_COMMAND, "--data-dir", str(member.data_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    return str(json.loads(done.stdout)["url"])


def measure_cpu(pid: int, seconds: float) -> float:
    """Share of one core process ``pid`` used over ``seconds`` of wall time."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="none/one-page pairs")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, running_devnet(Path(tmp), 1) as nodes:
        wait_ready(nodes)
        contributor = next(n for n in nodes if n.name == "contributor-1")
        assert contributor.proc is not None
        pid = contributor.proc.pid
        link = login_link(contributor)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
            )
            paints, firsts = [], []
            for _ in range(args.loads):
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                page = context.new_page()
                start = time.monotonic()
                page.goto(link)
                page.wait_for_selector("body[data-updates]")
                firsts.append((time.monotonic() - start) * 1000)
                paints.append(
                    page.evaluate(
                        "performance.getEntriesByName('first-contentful-paint')[0].startTime"
                    )
                )
                context.close()
            idle, watched, updates = [], [], 0
            stats: dict[str, float] = {}
            for _ in range(args.rounds):
                time.sleep(2)  # the last page's stream is gone
                idle.append(measure_cpu(pid, args.seconds))
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                page = context.new_page()
                page.goto(link)
                page.wait_for_selector("body[data-updates]")
                before = int(page.evaluate("document.body.dataset.updates"))
                watched.append(measure_cpu(pid, args.seconds))
                updates += int(page.evaluate("document.body.dataset.updates")) - before
                stats = page.evaluate(
                    "fetch('/dashboard/snapshot').then(r => r.json()).then(s => s.dashboard)"
                )
                context.close()
            browser.close()
    figures = {
        "first_paint_ms_median": round(statistics.median(paints)),
        "first_paint_ms_max": round(max(paints)),
        "first_snapshot_ms_median": round(statistics.median(firsts)),
        "daemon_cpu_idle_percent": [round(100 * x, 2) for x in idle],
        "daemon_cpu_one_page_percent": [round(100 * x, 2) for x in watched],
        "live_updates_cost_percent_of_a_core": round(
            100 * (statistics.mean(watched) - statistics.mean(idle)), 2
        ),
        "snapshots_rendered": updates,
        "snapshot_cpu_ms": stats.get("cpu_ms_per_snapshot"),
        "snapshot_cost_percent_of_a_core": round(
            float(stats.get("cpu_ms_per_snapshot", 0)) / 1000 / TICK_S * 100, 3
        ),
        "seconds": args.seconds,
    }
    for name, value in figures.items():
        print(f"{name:40} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
