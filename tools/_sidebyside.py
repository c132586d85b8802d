"""What the benchmarks share to measure this checkout side by side with another one (never a test).

A *tree* is a checkout of the repository: this one, and with ``--baseline PATH`` another (for instance
``git worktree add /tmp/base <commit>``, or ``git archive <commit> | tar -x -C /tmp/base``). A measurement runs in
a fresh child process that runs this checkout's benchmark script but imports the packages from the tree's own
``packages/*/src`` (first on ``PYTHONPATH``), so the other tree needs no environment of its own: only its sources.

Rounds interleave the trees (baseline, this; then this, baseline; ...): this machine's speed drifts by 10-20%
within seconds, and a ratio taken within one round sees both trees under about the same drift. A table shows,
per figure, the median over the rounds for each tree, the ratio this / baseline (the median of the per-round
ratios) and the range of those ratios.

Where timing cannot separate 10%, `instructions` counts what the child executes under valgrind's callgrind: the
same code and inputs give the same count to within about 1%. The count of one operation is the difference of two
children that do `small` and `large` operations after the same set-up, divided by ``large - small``, so start-up
and set-up cancel out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

__all__ = [
    "ROOT",
    "Row",
    "Tree",
    "add_arguments",
    "child",
    "env_for",
    "instructions",
    "interleave",
    "machine",
    "order",
    "p99",
    "print_table",
    "trees",
]


@dataclass(frozen=True)
class Tree:
    label: str
    path: Path


def add_arguments(parser: argparse.ArgumentParser, rounds: int) -> None:
    parser.add_argument(
        "--baseline", type=Path, help="another checkout to run side by side (e.g. a git worktree of an older commit)"
    )
    parser.add_argument("--rounds", type=int, default=rounds, help=f"rounds of every measurement (default {rounds})")


def trees(baseline: Path | None) -> list[Tree]:
    """This checkout, and the baseline first when there is one."""
    this = Tree("this tree", ROOT)
    if baseline is None:
        return [this]
    path = baseline.resolve()
    if not list((path / "packages").glob("*/src")):
        raise SystemExit(f"{path} is not a checkout of this repository (no packages/*/src)")
    return [Tree("baseline", path), this]


def order(items: Sequence[Any], round_: int) -> list[Any]:
    """`items` in round `round_`'s order: as given in even rounds, reversed in odd ones (ABBA)."""
    return list(items) if round_ % 2 == 0 else list(reversed(items))


def env_for(tree: Tree) -> dict[str, str]:
    """The environment of a child that imports the packages from `tree`'s sources."""
    env = dict(os.environ)
    src = [str(p) for p in sorted((tree.path / "packages").glob("*/src"))]
    env["PYTHONPATH"] = os.pathsep.join(src + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def child(tree: Tree, script: str, args: Sequence[str], prefix: Sequence[str] = ()) -> dict[str, Any]:
    """Run ``script --child *args`` for `tree` in a fresh process; its last line of output is a JSON object."""
    cmd = [*prefix, sys.executable, script, "--child", *args]
    done = subprocess.run(cmd, env=env_for(tree), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{tree.label}: {' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def interleave(
    forest: list[Tree], rounds: int, measure: Callable[[Tree], dict[str, float]]
) -> dict[str, list[dict[str, float]]]:
    """`measure` for every tree, `rounds` times, the trees' order alternating from round to round."""
    runs: dict[str, list[dict[str, float]]] = {t.label: [] for t in forest}
    for n in range(rounds):
        for tree in order(forest, n):
            runs[tree.label].append(measure(tree))
    return runs


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]


def instructions(tree: Tree, script: str, args: Sequence[str], small: int, large: int) -> float:
    """Instructions per operation: callgrind counts of ``script --child *args N`` for N = small and large."""
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    counts = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (small, large):
            out = os.path.join(tmp, f"callgrind.{n}")
            prefix = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
            child(tree, script, [*args, str(n)], prefix=prefix)
            with open(out) as f:
                counts.append(sum(int(line.split()[1]) for line in f if line.startswith(("totals:", "summary:"))))
    return (counts[1] - counts[0]) / (large - small)


def machine(note: str = "") -> str:
    return (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC" + note
    )


@dataclass(frozen=True)
class Row:
    """One line of a table: `key` of the measurements of `kind`, with its target in words."""

    label: str
    kind: str
    key: str
    target: str = ""
    digits: int = 1


def print_table(rows: list[Row], results: dict[str, dict[str, list[dict[str, float]]]], forest: list[Tree]) -> None:
    """Markdown: per row the median over the rounds for each tree and, with a baseline, this / baseline.

    `results` maps a row's kind to `interleave`'s answer.
    """
    labels = [t.label for t in forest]
    head = ["measure", "target", *labels]
    if len(forest) > 1:
        head += ["this / baseline", "per-round range"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for row in rows:
        runs = results.get(row.kind)
        if not runs:
            continue
        values = {label: [r[row.key] for r in runs[label]] for label in labels}
        cells = [row.label, row.target] + [f"{statistics.median(values[label]):,.{row.digits}f}" for label in labels]
        if len(forest) > 1:
            pairs = zip(values["baseline"], values["this tree"], strict=True)
            ratios = [t / b if b else float("nan") for b, t in pairs]
            cells += [f"{statistics.median(ratios):.2f}", f"{min(ratios):.2f}-{max(ratios):.2f}"]
        print("| " + " | ".join(cells) + " |")
