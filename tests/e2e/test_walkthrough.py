"""The README's "Your own network, by hand": scripts/walkthrough.sh runs its steps against
daemons it starts on 127.0.0.1, and the README and the script name the same commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "walkthrough.sh"


def readme_commands() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Your own network, by hand", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    return set(re.findall(r"^aimx ([a-z]+(?: [a-z]+)?)", block, re.MULTILINE))


def test_the_readme_and_the_script_run_the_same_commands() -> None:
    script = SCRIPT.read_text()
    commands = readme_commands()
    assert {"coordinator start", "node start", "faucet", "job submit", "ledger verify"} <= commands
    missing = {c for c in commands if f"aimx {c}" not in script}
    assert not missing, f"in the README's walkthrough but not in {SCRIPT.name}: {missing}"


def test_the_walkthrough_settles_a_job_and_every_ledger_verifies(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "walk")],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert done.stdout.rstrip().endswith("walkthrough done"), out[-2000:]
    # the workspace paid two providers, and all four chains verified from genesis
    assert out.count("ok chain aimx-devnet") == 4, out[-4000:]
    balances = [float(b) for b in re.findall(r"^balance\s+([\d.]+) credits", out, re.MULTILINE)]
    workspace, alice, bob = balances
    assert workspace < 10 and alice > 0 and bob > 0
    # nothing is left running there
    work = (tmp_path / "walk").resolve()
    leftover = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cwd").resolve() == work:
                leftover.append(proc.name)
        except OSError:
            continue
    assert not leftover
