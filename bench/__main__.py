"""Run the benchmark scenarios, print a table and write JSON: `python -m bench [--quick]`."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench import fleet
from bench.common import Figure

# Module bench/<name>.py with run(quick: bool) -> list[Figure], in running order.
SCENARIOS = (
    "scrape",
    "publish",
    "memory",
    "restart",
    "emulator",
    "steady",
    "backfill",
    "detection",
    "imports",
    "events",
)
DEFAULT_JSON = os.path.join(os.path.dirname(__file__), "results", "latest.json")


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument(
        "--only", metavar="NAME", action="append", choices=SCENARIOS, help="run only this scenario"
    )
    parser.add_argument("--json", metavar="PATH", default=DEFAULT_JSON, help="where to write JSON")
    return parser.parse_args(argv)


def _shown(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    text = f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{text} {unit}"


def table(results: dict[str, list[Figure]]) -> str:
    """Format the figures as a plain-text table."""
    rows = [("scenario", "figure", "value", "baseline", "target", "met", "baseline is")]
    for scenario, figures in results.items():
        for f in figures:
            met = "-" if f.target_met is None else ("yes" if f.target_met else "NO")
            rows.append(
                (
                    scenario,
                    f.name,
                    _shown(f.value, f.unit),
                    _shown(f.baseline, f.unit),
                    f.target or "-",
                    met,
                    f.baseline_description or "-",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """Describe where the figures were measured."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen scenarios; exit 1 if one of them failed to run (not if a target is missed)."""
    args = _arguments(argv)
    # The in-process exporter's info and warning lines (its denied polls) are not results.
    logging.getLogger("exporter").setLevel(logging.ERROR)
    chosen = [name for name in SCENARIOS if not args.only or name in args.only]
    results: dict[str, list[Figure]] = {}
    durations: dict[str, float] = {}
    errors: dict[str, str] = {}
    try:
        for name in chosen:
            run: Callable[[bool], list[Figure]] = importlib.import_module(f"bench.{name}").run
            print(f"running {name}{' (quick)' if args.quick else ''} ...", file=sys.stderr)
            start = time.perf_counter()
            try:
                results[name] = run(args.quick)
            except Exception as exc:  # one broken scenario must not hide the others' figures
                errors[name] = f"{type(exc).__name__}: {exc}"
                print(f"{name} failed: {errors[name]}", file=sys.stderr)
            durations[name] = time.perf_counter() - start
    finally:
        fleet.cleanup()
    print(table(results))
    document = {
        "quick": args.quick,
        "machine": machine(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "durations_seconds": durations,
        "errors": errors,
        "scenarios": {
            name: [dataclasses.asdict(f) for f in figures] for name, figures in results.items()
        },
    }
    directory = os.path.dirname(os.path.abspath(args.json))
    os.makedirs(directory, exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
    print(f"wrote {args.json}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
