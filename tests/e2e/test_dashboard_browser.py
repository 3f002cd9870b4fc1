"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``, driven by
Playwright's Python package, never its own browser download) on a devnet contributor.

It logs in with the link ``aimx node dashboard`` prints (its token in the fragment,
moved to sessionStorage and sent as a Bearer token), watches the live numbers change
as a job completes and as another fails, pauses the node with the page's button and sees
it stop bidding, sets a schedule that excludes today with the page's settings form and
sees the node paused by it. Screenshots at desktop (1280x800) and phone (390x844) widths
go to ``$AIMX_SCREENSHOTS`` when set, else to a directory the test prints:

- ``1-first-start``: a contributor just started, nothing earned yet;
- ``2-working``: a job running, with its progress;
- ``3-paid``: the job paid: earnings, chart and recent jobs updated;
- ``4-failed-job``: a run that failed, with its reason;
- ``5-paused``: paused from the page, the reason shown;
- ``6-paused-by-schedule``: outside the schedule set from the page.

It also measures the page's first paint (``first-contentful-paint``) and prints it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.devnet import DevNode, running_devnet, tiny_model_and_inputs, wait_ready

from ._devnet import by_name, status_of, wait_for

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
RUN_MS = 3_000
NODE = (sys.executable, str(Path(__file__).with_name("dashboard_node.py")), str(RUN_MS))
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def _browser_missing() -> str | None:
    if not os.path.exists(CHROMIUM) and shutil.which("chromium") is None:
        return "no chromium (Debian's package: apt-get install chromium; setup.sh installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "no playwright Python package (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[DevNode]]:
    missing = _browser_missing()
    if missing:
        pytest.skip(missing)
    root = tmp_path_factory.mktemp("dash")
    with running_devnet(
        root,
        1,
        contributor_command=lambda i: NODE,
        workspace_extra="[requester]\nbid_window_ms = 1000\n",
    ) as nodes:
        wait_ready(nodes)
        yield nodes


def _shots_dir(tmp_path: Path) -> Path:
    chosen = os.environ.get("AIMX_SCREENSHOTS")
    directory = Path(chosen) if chosen else tmp_path / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    print(f"\ndashboard screenshots in {directory}")
    return directory


def _login_link(member: DevNode) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "node",
            "node",
            "dashboard",
            "--json",
            "--no-open",
            "--data-dir",
            str(member.data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["url"])


def _submit(nodes: list[DevNode], **kw: Any) -> str:
    path, inputs = tiny_model_and_inputs()
    with by_name(nodes, "workspace").client() as c:
        return c.submit(path, inputs, **kw)  # type: ignore[arg-type]


def _why(member: DevNode) -> dict[str, Any]:
    with member.client() as c:
        return c._call("GET", "/api/provider/why")  # type: ignore[no-any-return]


def test_the_dashboard_in_chromium(devnet: list[DevNode], tmp_path: Path) -> None:
    from playwright.sync_api import Page, expect, sync_playwright

    contributor = by_name(devnet, "contributor-1")
    shots = _shots_dir(tmp_path)
    link = _login_link(contributor)
    base = link.split("/dashboard/")[0]

    def shoot(pages: dict[str, Page], name: str) -> None:
        for width, page in pages.items():
            page.screenshot(path=str(shots / f"{name}-{width}.png"), full_page=True)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            # without the login link's token the page shows only how to get one
            anonymous = browser.new_page()
            bare = anonymous.goto(base + "/dashboard/")
            assert bare is not None and bare.status == 200
            expect(anonymous.locator("#login-card")).to_be_visible()
            expect(anonymous.locator("#login-card")).to_contain_text("aimx node dashboard")
            expect(anonymous.locator("#balance")).to_be_hidden()
            anonymous.close()

            pages: dict[str, Page] = {}
            for name, size in (("desktop", DESKTOP), ("phone", PHONE)):
                page = browser.new_context(viewport=size).new_page()
                page.goto(link)
                page.wait_for_selector("body[data-updates]", timeout=20_000)
                # the token left the address bar for this origin's sessionStorage, and
                # no cookie was set
                assert page.url == base + "/dashboard/"
                assert page.evaluate("sessionStorage.getItem('aimx_dashboard_token')")
                assert page.context.cookies() == []
                pages[name] = page
            desktop, phone = pages["desktop"], pages["phone"]
            paint = desktop.evaluate(
                "performance.getEntriesByName('first-contentful-paint')[0].startTime"
            )
            # a figure, not a check (no test asserts a wall-clock time): bench/dashboard.py
            print(f"first contentful paint: {paint:.0f} ms")
            assert paint > 0
            expect(desktop.locator("#state")).to_have_text("idle", timeout=20_000)
            expect(desktop.locator("#earn-all")).to_have_text("0.00 cr")
            # readable on a phone: one column, nothing wider than the screen
            assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            shoot(pages, "1-first-start")

            # a job: it shows while it runs, then the earnings move without a reload
            job: dict[str, str] = {}
            worker = threading.Thread(target=lambda: job.update(id=_submit(devnet)))
            worker.start()
            expect(desktop.locator("#running tr")).to_have_count(1, timeout=30_000)
            expect(desktop.locator("#state")).to_have_text("working", timeout=10_000)
            expect(phone.locator("#running tr")).to_have_count(1, timeout=10_000)
            shoot(pages, "2-working")
            worker.join(30)
            expect(desktop.locator("#earn-all")).not_to_have_text("0.00 cr", timeout=30_000)
            expect(desktop.locator("#recent tr").first).to_contain_text("paid")
            expect(desktop.locator("#earn-today")).not_to_have_text("0.00 cr")
            assert desktop.evaluate("document.querySelectorAll('#chart canvas').length") >= 1
            updates = int(desktop.evaluate("document.body.dataset.updates"))
            assert updates > 3  # live: several snapshots, one page load
            # the payment is kept in the data directory (today's total survives a restart)
            kept = (contributor.data_dir / "earnings.jsonl").read_text().splitlines()
            assert len(kept) == 1 and json.loads(kept[0])["amount"] > 0
            shoot(pages, "3-paid")

            # a run that fails: the outcome and its reason
            (contributor.data_dir / "fail-next").touch()
            _submit(devnet, max_retries=0)
            failed = desktop.locator("#recent tr").first
            expect(failed).to_contain_text("failed", timeout=30_000)
            expect(failed).to_contain_text("CUDA out of memory")
            shoot(pages, "4-failed-job")

            # pause with the page's button: the node stops bidding
            desktop.click("#pause")
            expect(desktop.locator("#state")).to_have_text("paused", timeout=10_000)
            expect(phone.locator("#state")).to_have_text("paused", timeout=10_000)
            expect(desktop.locator("#resume")).to_be_visible()
            assert status_of(contributor)["availability"]["paused"] is True
            refused_before = _why(contributor)["outcomes"].get("shutting_down", 0)
            _submit(devnet, max_retries=0)
            wait_for(
                "the paused node to refuse the job",
                lambda: _why(contributor)["outcomes"].get("shutting_down", 0) > refused_before,
            )
            shoot(pages, "5-paused")
            desktop.click("#resume")
            expect(desktop.locator("#state")).not_to_have_text("paused", timeout=10_000)
            assert status_of(contributor)["availability"]["paused"] is False

            # a schedule that leaves today out, set with the page's form; a wrong value is
            # refused with the key named
            field = desktop.locator('input[name="contributor.availability.days"]')
            field.fill("Funday")
            desktop.click("#settings button[type=submit]")
            expect(desktop.locator("#settings-msg")).to_contain_text(
                "contributor.availability.days", timeout=10_000
            )
            tomorrow = (dt.datetime.now().astimezone() + dt.timedelta(days=1)).strftime("%a")
            field.fill(tomorrow)
            desktop.click("#settings button[type=submit]")
            expect(desktop.locator("#settings-msg")).to_have_text(
                "Saved to config.toml.", timeout=10_000
            )
            expect(desktop.locator("#state")).to_have_text("paused", timeout=20_000)
            expect(desktop.locator("#reason")).to_contain_text("schedule")
            assert "days" in (contributor.data_dir / "config.toml").read_text()
            shoot(pages, "6-paused-by-schedule")
        finally:
            browser.close()
    taken = sorted(p.name for p in shots.glob("*.png"))
    assert len(taken) == 12, taken
