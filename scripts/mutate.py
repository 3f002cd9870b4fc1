"""Mutation testing of the money and trust rules: would the tests notice a broken check?

Each mutant changes one validity check in one module: a comparison turned into its
neighbour (``<`` into ``<=``, ``==`` into ``!=``, ``in`` into ``not in``, ...), or a guard
whose body refuses (``raise`` or an early ``return``) switched off. The mutant is written
into a copy of the repository in a temporary directory (the working tree is never
touched), the tests that cover the module run there with ``-x``, and the mutant is
*killed* when they fail. The score is killed / all.

    .venv/bin/python scripts/mutate.py                 # every module, every mutant
    .venv/bin/python scripts/mutate.py --sample 40     # 40 mutants drawn with --seed
    .venv/bin/python scripts/mutate.py --list          # the mutants, without running

Surviving mutants are printed with their place: each is a check no test pins down.
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The modules whose checks decide who gets credits, and the tests that cover each.
TARGETS: dict[str, tuple[str, ...]] = {
    "ledger/_rules.py": ("tests/ledger", "tests/scheduler"),
    "ledger/_mempool.py": ("tests/ledger",),
    "ledger/_state.py": ("tests/ledger",),
    "scheduler/_requester.py": ("tests/scheduler",),
    "scheduler/_verification.py": ("tests/scheduler",),
    "protocol/_envelope.py": ("tests/protocol",),
    "sandbox/_admission.py": ("tests/sandbox/test_admission.py",),
}
#: What a copy of the repository needs to run the tests.
COPIED = ("protocol", "ledger", "scheduler", "sandbox", "node", "tests", "pyproject.toml")
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


@dataclass(frozen=True)
class Mutant:
    path: str
    line: int
    what: str
    source: str  # the whole mutated module

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def _refuses(body: list[ast.stmt]) -> bool:
    """A guard's body that refuses: it raises, or returns at once."""
    return bool(body) and isinstance(body[0], ast.Raise | ast.Return)


def mutants_of(path: str) -> Iterator[Mutant]:
    """One mutant per comparison inside a refusing guard, and one per such guard."""
    text = (ROOT / path).read_text()
    tree = ast.parse(text)
    guards = [n for n in ast.walk(tree) if isinstance(n, ast.If) and _refuses(n.body)]
    for index, guard in enumerate(guards):
        yield _mutate(path, text, index, f"guard at line {guard.lineno} switched off", None)
        compares = [n for n in ast.walk(guard.test) if isinstance(n, ast.Compare)]
        for c_index, compare in enumerate(compares):
            for o_index, op in enumerate(compare.ops):
                swapped = SWAP.get(type(op))
                if swapped is None:
                    continue
                what = (
                    f"line {compare.lineno}: {type(op).__name__} -> {swapped.__name__} "
                    f"in `{ast.unparse(compare)}`"
                )
                yield _mutate(path, text, index, what, (c_index, o_index, swapped))


def _mutate(
    path: str,
    text: str,
    guard_index: int,
    what: str,
    swap: tuple[int, int, type[ast.cmpop]] | None,
) -> Mutant:
    tree = ast.parse(text)
    guards = [n for n in ast.walk(tree) if isinstance(n, ast.If) and _refuses(n.body)]
    guard = guards[guard_index]
    line = guard.lineno
    if swap is None:
        guard.test = ast.Constant(False)
    else:
        c_index, o_index, op = swap
        compare = [n for n in ast.walk(guard.test) if isinstance(n, ast.Compare)][c_index]
        compare.ops[o_index] = op()
        line = compare.lineno
    return Mutant(path, line, what, ast.unparse(tree))


def copy_repository(into: Path) -> None:
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source, into / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(source, into / name)


def killed(mutant: Mutant, copy: Path) -> bool:
    """Run the module's tests against the mutant (in the copy); True if they fail."""
    target = copy / mutant.path
    original = target.read_text()
    target.write_text(mutant.source)
    try:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-x",
                "-q",
                "-p",
                "no:cacheprovider",
                *TARGETS[mutant.path],
            ],
            cwd=copy,
            env={**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=TEST_TIMEOUT_S,
            check=False,
        )
        return run.returncode != 0
    except subprocess.TimeoutExpired:
        return True  # a mutant that hangs the tests is noticed
    finally:
        target.write_text(original)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=0, help="run this many mutants only")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--module", action="append", help="only these modules (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    args = parser.parse_args()
    modules = args.module or list(TARGETS)
    for module in modules:
        if module not in TARGETS:
            parser.error(f"{module} is not a target; choose from {', '.join(TARGETS)}")
    mutants = [m for module in modules for m in mutants_of(module)]
    if args.sample:
        mutants = random.Random(args.seed).sample(mutants, min(args.sample, len(mutants)))
    if args.list:
        for m in mutants:
            print(m)
        print(f"{len(mutants)} mutants")
        return 0
    survivors: list[Mutant] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aimx-mutate-") as tmp:
        copy = Path(tmp)
        copy_repository(copy)
        for i, mutant in enumerate(mutants, 1):
            dead = killed(mutant, copy)
            if not dead:
                survivors.append(mutant)
            print(f"[{i}/{len(mutants)}] {'killed ' if dead else 'SURVIVED'} {mutant}", flush=True)
    kills = len(mutants) - len(survivors)
    score = kills / len(mutants) if mutants else 1.0
    print(
        f"\nmutation score {kills}/{len(mutants)} = {score:.1%} "
        f"in {time.monotonic() - started:.0f} s"
    )
    for mutant in survivors:
        print(f"  survived: {mutant}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
