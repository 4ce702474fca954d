#!/usr/bin/env python3
"""Generate the rules, the PrometheusRule and the Grafana dashboard from the jsonnet mixin.

Writes deploy/prometheus/rules.yml, deploy/kubernetes/prometheusrule.yaml and
deploy/grafana/dashboard.json from deploy/mixin/mixin.libsonnet (`make mixin`). With --check it
writes nothing and exits 1 when a checked-in file differs from a fresh generation. With
--config FILE (a jsonnet object merged into _config) and --out DIR it writes your own copies.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

MIXIN = Path(__file__).resolve().parent
ROOT = MIXIN.parents[1]
K8S = ROOT / "deploy" / "kubernetes"
# Output name -> where the repository keeps it.
OUTPUTS = {
    "rules.yml": ROOT / "deploy" / "prometheus" / "rules.yml",
    "prometheusrule.yaml": K8S / "prometheusrule.yaml",
    "dashboard.json": ROOT / "deploy" / "grafana" / "dashboard.json",
}
DASHBOARD = "healthimaging-exporter.json"
RULES_HEADER = """\
# GENERATED from the jsonnet mixin in deploy/mixin by deploy/mixin/generate.py; do not edit.
# Regenerate: make mixin. The alerts are in deploy/mixin/alerts/*.libsonnet (their comments
# explain the expressions), the recording rules in deploy/mixin/rules/*.libsonnet, the
# selectors, thresholds and runbook URL in deploy/mixin/config.libsonnet (_config).
# tests/e2e/rules/*.test.yml unit-test this file with `promtool test rules`.
# docs/alerting.md explains every alert; docs/runbooks.md has one section per alert.
"""
# Keys in the order people read a rule; keys not listed follow in jsonnet's (sorted) order.
_ORDER = {
    "group": ("name", "interval", "limit", "rules"),
    "rule": ("record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"),
    "labels": ("severity",),
    "annotations": ("summary", "description", "runbook_url"),
}


def _load_prometheusrule_generator() -> ModuleType:
    """deploy/kubernetes/generate_prometheusrule.py, which wraps a rules file in a manifest."""
    path = K8S / "generate_prometheusrule.py"
    spec = importlib.util.spec_from_file_location("generate_prometheusrule", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evaluate(config: Path | None = None) -> dict[str, Any]:
    """The mixin as JSON: prometheusAlerts, prometheusRules (if any) and grafanaDashboards."""
    # gojsonnet (PyPI, the Go implementation of jsonnet) is in pyproject's `test` extra.
    import _gojsonnet

    overrides = f"+ {{ _config+:: (import {json.dumps(str(config.resolve()))}) }}" if config else ""
    snippet = f"""
        local mixin = (import 'mixin.libsonnet') {overrides};
        {{
          alerts: mixin.prometheusAlerts,
          rules: if std.objectHasAll(mixin, 'prometheusRules') then mixin.prometheusRules
                 else {{ groups: [] }},
          dashboards: mixin.grafanaDashboards,
        }}
    """
    result: dict[str, Any] = json.loads(
        _gojsonnet.evaluate_snippet(str(MIXIN / "generate"), snippet, jpathdir=[str(MIXIN)])
    )
    return result


def _ordered(mapping: dict[str, Any], kind: str) -> dict[str, Any]:
    """The mapping with its keys in _ORDER[kind] first."""
    first = [key for key in _ORDER[kind] if key in mapping]
    return {key: mapping[key] for key in [*first, *(k for k in mapping if k not in first)]}


def _rule(rule: dict[str, Any]) -> dict[str, Any]:
    ordered = _ordered(rule, "rule")
    for kind in ("labels", "annotations"):
        if kind in ordered:
            ordered[kind] = _ordered(ordered[kind], kind)
    return ordered


def render_rules(mixin: dict[str, Any]) -> str:
    """The Prometheus rules file: recording rule groups (if any), then the alert groups."""
    groups = [
        _ordered({**group, "rules": [_rule(r) for r in group["rules"]]}, "group")
        for group in [*mixin["rules"]["groups"], *mixin["alerts"]["groups"]]
    ]
    generator = _load_prometheusrule_generator()
    body = yaml.dump(
        {"groups": groups},
        Dumper=generator._Dumper,
        sort_keys=False,
        width=4096,
        allow_unicode=True,
        indent=2,
    )
    return RULES_HEADER + body


def render_all(config: Path | None = None) -> dict[str, str]:
    """Output name -> text of every generated file."""
    mixin = evaluate(config)
    rules = render_rules(mixin)
    dashboard = mixin["dashboards"][DASHBOARD]
    return {
        "rules.yml": rules,
        "prometheusrule.yaml": _load_prometheusrule_generator().render(rules),
        "dashboard.json": json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n",
    }


def main(argv: list[str] | None = None) -> int:
    """Write (or --check) the generated files."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="compare instead of writing; exit 1 when stale"
    )
    parser.add_argument(
        "--config", type=Path, help="a jsonnet file with an object merged into the mixin's _config"
    )
    parser.add_argument(
        "--out", type=Path, help="write rules.yml, prometheusrule.yaml, dashboard.json here"
    )
    args = parser.parse_args(argv)
    try:
        texts = render_all(args.config)
    except ImportError:
        print(
            "generate: the jsonnet module is missing; pip install gojsonnet "
            "(it is in the `test` extra: make .venv/.installed)",
            file=sys.stderr,
        )
        return 2
    except RuntimeError as exc:  # how _gojsonnet reports jsonnet errors
        print(f"generate: jsonnet: {exc}", file=sys.stderr)
        return 2
    targets = {name: (args.out / name if args.out else path) for name, path in OUTPUTS.items()}
    if not args.check:
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
        for name, path in targets.items():
            path.write_text(texts[name], encoding="utf-8")
        return 0
    stale = []
    for name, path in targets.items():
        try:
            actual = path.read_text(encoding="utf-8")
        except OSError as exc:
            actual = ""
            print(f"generate: {path}: {exc.strerror}", file=sys.stderr)
        if actual != texts[name]:
            stale.append(str(path))
            diff = difflib.unified_diff(
                actual.splitlines(keepends=True),
                texts[name].splitlines(keepends=True),
                str(path),
                "regenerated",
                n=1,
            )
            sys.stderr.writelines(list(diff)[:40])
    if stale:
        print(
            f"generate: out of date with deploy/mixin: {', '.join(stale)}; run make mixin",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
