"""One benchmark, several builds of ctrltrace, side by side in one run.

    python -m bench.revisions --variant base ../base /tmp/base-venv/bin/python \\
        --variant c . .venv/bin/python \\
        --variant pure . .venv/bin/python CTRLTRACE_NO_ACCELERATORS=1 \\
        --rounds 5 --figures events_per_s -- bench.pipeline --only d,f --repeats 1

Owns running a benchmark module once per variant per round, rotating which variant goes first
in each round so that the drift of a shared machine touches each alike, reading the figures
each run wrote with ``--json``, and printing every figure's median per variant with its ratio
to the first variant and the median of the per-round ratios (paired in time, so less touched by
drift). A variant is a checkout (the benchmark runs there, importing that checkout's
ctrltrace), the Python of a virtualenv where it is installed, and environment settings.

It measures nothing itself and changes no build: what it compares is what each variant's
benchmark prints.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Variant:
    name: str
    checkout: Path
    python: str
    env: dict[str, str] = field(default_factory=dict)


def parse_variant(words: list[str]) -> Variant:
    """``NAME CHECKOUT PYTHON [KEY=VALUE ...]``."""
    if len(words) < 3 or any("=" not in word for word in words[3:]):
        raise SystemExit(
            f"--variant {' '.join(words)}: expected NAME CHECKOUT PYTHON [KEY=VALUE ...]"
        )
    name, checkout, python, *settings = words
    env = dict(setting.split("=", 1) for setting in settings)
    return Variant(name, Path(checkout).resolve(), str(Path(python).absolute()), env)


def figures(report: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Every number in a JSON report, named by its path; list items by their ``config``,
    ``key`` or ``name`` when they have one."""
    if isinstance(report, bool):
        return
    if isinstance(report, int | float):
        yield prefix, float(report)
    elif isinstance(report, dict):
        for key, value in report.items():
            yield from figures(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(report, list):
        for index, item in enumerate(report):
            label: object = index
            if isinstance(item, dict):
                label = item.get("config", item.get("key", item.get("name", index)))
            yield from figures(item, f"{prefix}[{label}]")


def run_once(variant: Variant, command: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="ctrltrace-revisions-") as scratch:
        output = Path(scratch) / "report.json"
        env = {**os.environ, **variant.env}
        subprocess.run(
            [variant.python, "-m", *command, "--json", str(output)],
            cwd=variant.checkout,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return dict(figures(json.loads(output.read_text())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", nargs="+", action="append", required=True, metavar="WORD")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--figures", default=".", help="a regular expression: only figures whose path matches"
    )
    parser.add_argument("command", nargs="+", help="the benchmark module and its arguments")
    args = parser.parse_args()
    variants = [parse_variant(words) for words in args.variant]
    wanted = re.compile(args.figures)
    runs: dict[str, list[dict[str, float]]] = {variant.name: [] for variant in variants}
    for round_ in range(args.rounds):
        order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
        for variant in order:
            print(f"round {round_ + 1}/{args.rounds}: {variant.name}", file=sys.stderr)
            runs[variant.name].append(run_once(variant, args.command))
    print(report(variants, runs, wanted))


def report(
    variants: list[Variant], runs: dict[str, list[dict[str, float]]], wanted: re.Pattern[str]
) -> str:
    """Each figure's median per variant; beside every variant after the first, the ratio of
    the medians and the median of the per-round ratios."""
    first = variants[0].name
    names = [name for name in runs[first][0] if wanted.search(name)]
    lines = [f"medians over {len(runs[first])} rounds; ratios to {first} (per-round median)"]
    for name in names:
        base = [run[name] for run in runs[first]]
        cells = [f"{first} {_number(statistics.median(base))}"]
        for variant in variants[1:]:
            values = [run.get(name, float("nan")) for run in runs[variant.name]]
            middle = statistics.median(base)
            ratio = statistics.median(values) / middle if middle else math.nan
            pairs = [v / b for v, b in zip(values, base, strict=True) if b]
            paired = statistics.median(pairs) if pairs else math.nan
            cells.append(
                f"{variant.name} {_number(statistics.median(values))} ({ratio:.3f}/{paired:.3f})"
            )
        lines.append(f"{name}: " + " · ".join(cells))
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4g}"


if __name__ == "__main__":
    main()
