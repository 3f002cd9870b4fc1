"""Mutation testing of the money and trust rules: would the tests notice a broken check?

Each mutant changes one validity check in one module: a comparison turned into its
neighbour (``<`` into ``<=``, ``==`` into ``!=``, ``in`` into ``not in``, ...), or a guard
whose body refuses (``raise`` or an early ``return``) switched off. The mutant is written
into a copy of the repository in a temporary directory (the working tree is never
touched), tests run there with ``-x``, and the mutant is *killed* when they fail.

To keep a mutant cheap, the module's covering tests first run once on the real code with
a line tracer (scripts/mutate_trace.py), which records the lines of the module each test
runs; a mutant then runs only the tests that reach its guard. A mutant those tests miss
is run again against the module's whole covering set (``TARGETS``) before it is counted
as a survivor (``--no-confirm`` skips that; ``--full`` skips the selection altogether).

A survivor that no behaviour can tell from the real code is listed in ``EQUIVALENT`` with
the reason; it is reported apart. The score is killed / (all - equivalent), and killed /
all is printed too.

    .venv/bin/python scripts/mutate.py                       # every module, every mutant
    .venv/bin/python scripts/mutate.py --module ledger/_rules.py --line 412
    .venv/bin/python scripts/mutate.py --sample 40           # 40 mutants drawn with --seed
    .venv/bin/python scripts/mutate.py --list                # the mutants, without running
    .venv/bin/python scripts/mutate.py --module ledger/_rules.py --line 412 \
        --tests tests/ledger/test_rules_pinned.py            # does this test kill them?

Surviving mutants are printed with their place: each is a check no test pins down.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The modules whose checks decide who gets credits, and the tests that cover each.
TARGETS: dict[str, tuple[str, ...]] = {
    "ledger/_rules.py": ("tests/ledger", "tests/scheduler", "tests/adversarial/test_pruning.py"),
    "ledger/_payout_rules.py": (
        "tests/ledger",
        "tests/scheduler",
        "tests/adversarial/test_pruning.py",
    ),
    "ledger/_admission.py": ("tests/ledger", "tests/node/ledger"),
    "ledger/_mempool.py": ("tests/ledger",),
    "ledger/_pool_claims.py": ("tests/ledger",),
    "ledger/_pool_room.py": ("tests/ledger",),
    "ledger/_state.py": ("tests/ledger", "tests/adversarial/test_pruning.py"),
    "ledger/_draft.py": ("tests/ledger", "tests/adversarial/test_pruning.py"),
    "ledger/_evidence.py": (
        "tests/ledger",
        "tests/scheduler",
        "tests/node/daemon/test_review29_witnesses.py",  # strongest_witnesses, a coordinator's
    ),
    "scheduler/_ledger.py": ("tests/scheduler",),
    # a provider's checks on an award and its escrow (does it run work it can be paid for?)
    # and its blame of a requester whose escrow does not cover the award
    "scheduler/_provider.py": ("tests/scheduler",),
    "scheduler/_provider_bids.py": ("tests/scheduler",),  # no bid on unfunded or paid work
    "scheduler/_provider_delivered.py": ("tests/scheduler",),  # delivered work bounded
    "scheduler/_provider_receipt.py": ("tests/scheduler",),  # receipts held and redeemed
    "scheduler/_requester.py": ("tests/scheduler",),
    "scheduler/_requester_awards.py": ("tests/scheduler",),
    "scheduler/_requester_exchange.py": ("tests/scheduler",),
    # awarded: a replica's messages are taken from its own provider only
    "scheduler/_requester_jobs.py": ("tests/scheduler",),
    "scheduler/_requester_policy.py": ("tests/scheduler",),
    "scheduler/_requester_settle.py": ("tests/scheduler",),
    "scheduler/_requester_verdict.py": ("tests/scheduler",),
    "scheduler/_verification.py": ("tests/scheduler",),
    "protocol/_envelope.py": ("tests/protocol",),
    "sandbox/_admission.py": (
        "tests/sandbox/test_admission.py",
        "tests/sandbox/test_admission_pinned.py",
    ),
}
#: What a copy of the repository needs to run the tests.
COPIED = (
    "protocol",
    "ledger",
    "scheduler",
    "sandbox",
    "node",
    "tests",
    "specs",  # tests check the spec text generated from the code
    "pyproject.toml",
)
SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
TEST_TIMEOUT_S = 300
#: The one traced run of a module's covering tests (line tracing slows them down).
TRACE_TIMEOUT_S = 1500

#: Mutants no behaviour can tell from the real code, by (module, function, what), with why.
EQUIVALENT: dict[tuple[str, str, str], str] = {
    (
        "scheduler/_requester_policy.py",
        "drop_failed_audit",
        "LtE -> Lt in `job.required <= job.spec.redundancy`",
    ): (
        "never equal under fixed replication: required is 0 (not audited) or 2 (an audit, "
        "drawn only at redundancy 1)"
    ),
    (
        "scheduler/_requester_policy.py",
        "drop_failed_audit",
        "guard `if not final and any((r.state == ReplicaState.RUNNING for r in "
        "job.replicas))` switched off",
    ): (
        "unreachable: its one caller that is not final (_progress) returns before it while "
        "a replica runs; the final callers (_fill short, _force) pass final"
    ),
    (
        "scheduler/_requester_policy.py",
        "drop_failed_audit",
        "Eq -> NotEq in `r.state == ReplicaState.RUNNING`",
    ): "as the guard it is in: never reached with final false and a replica running",
    (
        "scheduler/_requester_policy.py",
        "drop_failed_audit",
        "guard `if not live or len(live) > 2` switched off",
    ): (
        "a shortcut: with no live output, or three disagreeing, the audit reset leaves a "
        "verdict that decides nothing (too few, or no majority), and the job ends as it "
        "would have (finalise_short)"
    ),
    (
        "ledger/_evidence.py",
        "strongest_witnesses",
        "guard `if len(paid) < MIN_MAJORITY` switched off",
    ): (
        "a shortcut: with fewer than two paid witnesses the evidence the coordinator builds "
        "is refused by the ledger's check (too few agreeing Results) as the evidence as sent "
        "is (an unpaid one, or too few): the report is refused and counted either way"
    ),
    (
        "ledger/_evidence.py",
        "check_evidence",
        "guard `if p.reason == 'conflicting_results'` switched off",
    ): (
        "a shortcut: conflicting_results evidence holds no Result of another provider (checked "
        "above), so the witnesses returned after it, those others' providers, are empty too"
    ),
    ("scheduler/_requester_verdict.py", "_split", "guard `if len(theirs) < 2` switched off"): (
        "a shortcut: with fewer than two outputs the comparison below iterates over an "
        "empty ``theirs[1:]`` (never reading ``theirs[0]``) and returns False as well"
    ),
    (
        "scheduler/_requester.py",
        "_on_key",
        "guard `if rep.state != ReplicaState.DELIVERED` switched off",
    ): (
        "a key that opens nothing changes no state (the replica stays committed), and "
        "the job was progressed after its last change: progressing it again decides and "
        "awards nothing new (a wrong key's effects are pinned in "
        "tests/scheduler/test_requester_unseal_pinned.py)"
    ),
    (
        "ledger/_admission.py",
        "check_embedded",
        "guard `if not isinstance(p, Settle | Claim | Lock | Slash)` switched off",
    ): (
        "a shortcut: any other payload matches no case below, so it is remembered and "
        "returned as checked, which nothing reads for a kind that carries no messages"
    ),
    ("ledger/_admission.py", "check_embedded", "guard `if known.seen(digest)` switched off"): (
        "a shortcut: the payload's messages are decoded again, each found in the same "
        "memory of verified messages (no signature checked), with the same outcome"
    ),
    ("ledger/_mempool.py", "_forget", "guard `if vtx.id not in self._ids` switched off"): (
        "defensive, never true: every caller forgets a transaction it just took out of the "
        "pool (remove and prune pop it from its sender's queue, _drop_claim only one the "
        "claims held, add the one it replaces, which making room never evicts: it is the "
        "sender's own)"
    ),
    (
        "ledger/_pool_room.py",
        "victim_for",
        "guard `if hog is None or hog == bucket` switched off",
    ): (
        "never decides: victim_for runs only when the pool is full, so some share holds bytes "
        "and has its heap entry (hog is not None); and only when the newcomer grows the pool "
        "(growth > 0: a replacement no larger fits), so a hog that is the newcomer's own "
        "share fails the next check, held <= held + growth, with the same None"
    ),
    ("ledger/_state.py", "bucket_root", "guard `if not leaves` switched off"): (
        "a shortcut: EMPTY_BUCKET is content_hash(b''), what the join of no leaves hashes to"
    ),
    (
        "scheduler/_requester_awards.py",
        "fill",
        "GtE -> Gt in `len(job.live()) >= job.target`",
    ): (
        "unreachable difference: the shortcut above returns when a replica is live and "
        "live >= target, so live reaches target here only by awards made in this call, "
        "which are running (with none live before, initial_order's target is at least 1)"
    ),
    ("scheduler/_requester_policy.py", "with_probation", "guard `if not chosen` switched off"): (
        "a shortcut: n (the redundancy, or adaptive replication's 2) is at least 1, so "
        "nothing is chosen only when there are no bids; then nothing is left to add and "
        "the bids and n come back unchanged"
    ),
    ("scheduler/_requester_verdict.py", "probation_unmet", "guard `if not need` switched off"): (
        "a shortcut: with need 0 the check that follows (accepted established outputs >= 0) "
        "holds, and the same None is returned"
    ),
    (
        "scheduler/_requester_verdict.py",
        "probation_outcome",
        "guard `if done is None or done.status != JobStatus.FAILED or done.paid` switched off",
    ): (
        "a shortcut: a failed job pays nothing, and a job verified or accepted short met "
        "probation with live established outputs, so probation_unmet is None and "
        "veterans_short False: the effects come back unchanged"
    ),
    (
        "scheduler/_requester_settle.py",
        "receipts_at_deadline",
        "guard `if not by_commitment(job)` switched off",
    ): (
        "a shortcut: judged by bytes, the verdict's inputs are delivered replicas only, so "
        "every accepted one is delivered and the loop, which gives receipts to committed "
        "replicas, sends none (judge_job changes no state)"
    ),
    (
        "scheduler/_requester_settle.py",
        "receipts_at_deadline",
        "guard `if verdict.status not in (VerdictStatus.VERIFIED, VerdictStatus.TOO_FEW)` "
        "switched off",
    ): "a shortcut: the only other status, DISAGREE, accepts nothing, so the loop sends none",
    ("scheduler/_requester_exchange.py", "take_sealed", "guard `if rep.sealed` switched off"): (
        "defensive, never true: _on_result takes sealed bytes only for a committed replica "
        "holding none, or for one it has just committed from running (which held none)"
    ),
    (
        "scheduler/_requester_policy.py",
        "required",
        "IsNot -> Is in `r.output is not None`",
    ): (
        "a solo job has one replica, its trusted one, until that fails (then no replica is "
        "live and the order is decided again, solo off): those with an output and those "
        "without are both all trusted"
    ),
}


@dataclass(frozen=True)
class Mutant:
    path: str
    function: str  # the enclosing function, "<module>" outside one
    line: int
    span: tuple[int, int]  # the guard's condition, first and last line
    what: str
    source: str  # the whole mutated module

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.path, self.function, self.what)

    def __str__(self) -> str:
        return f"{self.path}:{self.line} {self.function}: {self.what}"


def _refuses(body: list[ast.stmt]) -> bool:
    """A guard's body that refuses: it raises, or returns at once."""
    return bool(body) and isinstance(body[0], ast.Raise | ast.Return)


def _guards(tree: ast.Module) -> list[tuple[ast.If, str]]:
    """Every refusing guard, in ``ast.walk`` order, with its innermost function's name."""
    owner: dict[int, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                owner[id(inner)] = node.name  # inner functions come later and win
    return [
        (n, owner.get(id(n), "<module>"))
        for n in ast.walk(tree)
        if isinstance(n, ast.If) and _refuses(n.body)
    ]


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def mutants_of(path: str) -> Iterator[Mutant]:
    """One mutant per comparison inside a refusing guard, and one per such guard."""
    text = (ROOT / path).read_text()
    tree = ast.parse(text)
    for index, (guard, function) in enumerate(_guards(tree)):
        span = (guard.test.lineno, guard.test.end_lineno or guard.test.lineno)
        what = f"guard `if {_short(ast.unparse(guard.test))}` switched off"
        yield _mutate(path, text, index, function, span, what, None)
        compares = [n for n in ast.walk(guard.test) if isinstance(n, ast.Compare)]
        for c_index, compare in enumerate(compares):
            for o_index, op in enumerate(compare.ops):
                swapped = SWAP.get(type(op))
                if swapped is None:
                    continue
                what = (
                    f"{type(op).__name__} -> {swapped.__name__} in `{_short(ast.unparse(compare))}`"
                )
                swap = (c_index, o_index, swapped)
                yield _mutate(path, text, index, function, span, what, swap)


def _mutate(
    path: str,
    text: str,
    guard_index: int,
    function: str,
    span: tuple[int, int],
    what: str,
    swap: tuple[int, int, type[ast.cmpop]] | None,
) -> Mutant:
    tree = ast.parse(text)
    guard, _ = _guards(tree)[guard_index]
    line = guard.lineno
    if swap is None:
        guard.test = ast.Constant(False)
    else:
        c_index, o_index, op = swap
        compare = [n for n in ast.walk(guard.test) if isinstance(n, ast.Compare)][c_index]
        compare.ops[o_index] = op()
        line = compare.lineno
    return Mutant(path, function, line, span, what, ast.unparse(tree))


def copy_repository(into: Path) -> None:
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source, into / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(source, into / name)


def _pytest(
    copy: Path,
    tests: Sequence[str],
    *extra: str,
    env: dict[str, str] | None = None,
    timeout_s: int = TEST_TIMEOUT_S,
) -> int:
    """Run pytest on ``tests`` in the copy; its exit status (-1 if it ran past the limit)."""
    try:
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, *tests],
            cwd=copy,
            env={
                **os.environ,
                "PYTHONPATH": str(copy),
                "PYTHONDONTWRITEBYTECODE": "1",
                **(env or {}),
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return -1
    return run.returncode


@dataclass(frozen=True)
class Traced:
    """One test's run on the real code: the module's lines it ran, how long, did it fail."""

    lines: frozenset[int]
    seconds: float
    failed: bool


def trace(path: str, copy: Path) -> dict[str, Traced]:
    """Run the module's covering tests on the real code, recording each test's lines."""
    out = copy / ".mutate-trace.json"
    status = _pytest(
        copy,
        TARGETS[path],
        "-p",
        "mutate_trace",
        env={
            "PYTHONPATH": f"{copy}{os.pathsep}{ROOT / 'scripts'}",
            "AIMX_TRACE_FILE": str(copy / path),
            "AIMX_TRACE_OUT": str(out),
        },
        timeout_s=TRACE_TIMEOUT_S,
    )
    if status not in (0, 1) or not out.exists():
        why = f"ran past {TRACE_TIMEOUT_S} s" if status == -1 else f"pytest exit status {status}"
        raise SystemExit(f"tracing the tests of {path} failed ({why})")
    runs = {
        test: Traced(frozenset(run.get("lines", ())), run.get("seconds", 0.0), run["failed"])
        for test, run in json.loads(out.read_text()).items()
    }
    out.unlink()
    failing = sorted(test for test, run in runs.items() if run.failed)
    for test in failing:
        print(f"note: {test} fails on the real code (the tree mid-edit?); left out", flush=True)
    return runs


def killed(mutant: Mutant, copy: Path, tests: Sequence[str], *extra: str) -> bool:
    """Run ``tests`` against the mutant (in the copy); True if they fail or hang."""
    if not tests:
        return False
    target = copy / mutant.path
    original = target.read_text()
    target.write_text(mutant.source)
    try:
        return _pytest(copy, tests, "-x", *extra) != 0
    finally:
        target.write_text(original)


def reaching(mutant: Mutant, runs: dict[str, Traced]) -> list[str]:
    """The traced tests that pass on the real code and run a line of the mutant's guard
    condition, quickest first (``-x`` stops at the first that fails)."""
    first, last = mutant.span
    lines = set(range(first, last + 1))
    hits = [t for t, run in runs.items() if not run.failed and run.lines & lines]
    return sorted(hits, key=lambda t: runs[t].seconds)


def deselect_failing(runs: dict[str, Traced]) -> list[str]:
    """pytest options that leave out the tests failing on the real code."""
    return [arg for t, run in runs.items() if run.failed for arg in ("--deselect", t)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=0, help="run this many mutants only")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--module", action="append", help="only these modules (repeatable)")
    parser.add_argument(
        "--line", type=int, action="append", help="only mutants at these lines (repeatable)"
    )
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument(
        "--full",
        action="store_true",
        help="run every mutant against the whole covering set (no trace: a test that fails on "
        "the real code then kills every mutant)",
    )
    parser.add_argument(
        "--no-confirm",
        action="store_true",
        help="count a survivor of the selected tests without rerunning the whole set",
    )
    parser.add_argument(
        "--tests",
        action="append",
        help="run the mutants against these tests only, no trace or confirmation (repeatable; "
        "to check that a new test kills what it pins)",
    )
    parser.add_argument("--json", type=Path, help="write the outcome of each mutant here")
    args = parser.parse_args()
    modules = args.module or list(TARGETS)
    for module in modules:
        if module not in TARGETS:
            parser.error(f"{module} is not a target; choose from {', '.join(TARGETS)}")
    mutants = [m for module in modules for m in mutants_of(module)]
    if args.line:
        mutants = [m for m in mutants if m.line in args.line or m.span[0] in args.line]
    if args.sample:
        mutants = random.Random(args.seed).sample(mutants, min(args.sample, len(mutants)))
    if args.list:
        for m in mutants:
            print(m)
        print(f"{len(mutants)} mutants")
        return 0
    outcomes: list[tuple[Mutant, str]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aimx-mutate-") as tmp:
        copy = Path(tmp)
        copy_repository(copy)
        runs: dict[str, dict[str, Traced]] = {}
        for i, mutant in enumerate(mutants, 1):
            full = TARGETS[mutant.path]
            if args.tests:
                dead = killed(mutant, copy, args.tests)
                how = "given tests"
            elif args.full:
                dead = killed(mutant, copy, full)
                how = "whole set"
            else:
                if mutant.path not in runs:
                    runs[mutant.path] = trace(mutant.path, copy)
                selected = reaching(mutant, runs[mutant.path])
                dead = killed(mutant, copy, selected)
                how = f"{len(selected)} tests"
                if not dead and not args.no_confirm:
                    dead = killed(mutant, copy, full, *deselect_failing(runs[mutant.path]))
                    how += ", then the whole set"
            if dead:
                outcome = "killed"
            elif mutant.key in EQUIVALENT:
                outcome = "equivalent"
            else:
                outcome = "SURVIVED"
            outcomes.append((mutant, outcome))
            print(f"[{i}/{len(mutants)}] {outcome:<10} {mutant} ({how})", flush=True)
    kills = sum(1 for _, o in outcomes if o == "killed")
    equivalent = [m for m, o in outcomes if o == "equivalent"]
    survivors = [m for m, o in outcomes if o == "SURVIVED"]
    counted = len(outcomes) - len(equivalent)
    score = kills / counted if counted else 1.0
    print(
        f"\nmutation score {kills}/{counted} = {score:.1%} "
        f"({len(equivalent)} equivalent set apart; {kills}/{len(outcomes)} of all) "
        f"in {time.monotonic() - started:.0f} s"
    )
    for path in dict.fromkeys(m.path for m, _ in outcomes):
        mine = [o for m, o in outcomes if m.path == path]
        print(
            f"  {path}: {len(mine)} run, {mine.count('killed')} killed, "
            f"{mine.count('equivalent')} equivalent, {mine.count('SURVIVED')} survived"
        )
    for mutant in equivalent:
        print(f"  equivalent: {mutant}: {EQUIVALENT[mutant.key]}")
    for mutant in survivors:
        print(f"  survived: {mutant}")
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "path": m.path,
                        "function": m.function,
                        "line": m.line,
                        "what": m.what,
                        "outcome": o,
                    }
                    for m, o in outcomes
                ],
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
