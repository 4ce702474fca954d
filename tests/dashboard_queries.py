"""Extract the PromQL of every Grafana dashboard panel, with template variables substituted."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"

# Grafana's built-in interval variables, as the dashboard would see them over a one-hour range.
DEFAULT_VARIABLES: dict[str, str] = {
    "__rate_interval": "2m",
    "__interval": "30s",
    "__range": "1h",
    "__range_s": "3600",
    # The "All" values of the dashboard's variables; cluster's matches series without the label.
    "cluster": ".*",
    "job": ".+",
    "instance": ".+",
    "datastore_id": ".+",
}

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    """The dashboard JSON as a mapping."""
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Replace $name and ${name} (with an optional :format) by concrete values."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise KeyError(f"no value for ${name} in {expr!r}")
        return variables[name]

    # Longest names first is implicit: \w+ is greedy, so $__range_s never matches as $__range.
    return _VARIABLE.sub(value, expr)


def panel_queries(
    path: Path = DASHBOARD, variables: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """(panel title, expr) of every panel target, template variables substituted."""
    values = {**DEFAULT_VARIABLES, **(variables or {})}
    queries: list[tuple[str, str]] = []
    for panel in iter_panels(load_dashboard(path).get("panels", [])):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if expr:
                title = f"{panel.get('title', '')} [{target.get('refId', '?')}]"
                queries.append((title, substitute(expr, values)))
    return queries


def documented_metrics(path: Path = METRICS_DOC) -> dict[str, str]:
    """Metric family name -> type, from the tables of docs/metrics.md."""
    families: dict[str, str] = {}
    for line in path.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and re.fullmatch(r"`[a-zA-Z_:][a-zA-Z0-9_:]*`", cells[0]):
            families[cells[0].strip("`")] = cells[1].split()[0]
    return families


_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
    "atan2",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w(])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels, keywords excluded)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}


def family_of(name: str, families: Mapping[str, str]) -> str | None:
    """The documented family a series name belongs to (histogram suffixes included)."""
    if name in families:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if name.endswith(suffix) and families.get(base) == "histogram":
            return base
    return None
