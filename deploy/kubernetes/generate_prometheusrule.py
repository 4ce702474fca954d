#!/usr/bin/env python3
"""Generate prometheusrule.yaml (a PrometheusRule for the Prometheus operator) from rules.yml.

deploy/mixin/generate.py (`make mixin`) runs this after generating rules.yml from the jsonnet
mixin; run it alone for a rules file of your own.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE.parent / "prometheus" / "rules.yml"
OUTPUT = HERE / "prometheusrule.yaml"
NAME = "healthimaging-exporter"


class _Dumper(yaml.SafeDumper):
    """A YAML dumper writing multi-line strings (PromQL, descriptions) as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    """Represent a string, as a literal block when it spans lines."""
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def load_groups(rules_text: str) -> list[Any]:
    """The rule groups of a Prometheus rules file; ValueError when it has none."""
    data = yaml.safe_load(rules_text)
    if (
        not isinstance(data, dict)
        or set(data) != {"groups"}
        or not isinstance(data["groups"], list)
    ):
        raise ValueError("a Prometheus rules file must be a mapping with only a `groups` list")
    if not data["groups"]:
        raise ValueError("the rules file has no groups")
    return data["groups"]


def render(rules_text: str, source: str = "deploy/prometheus/rules.yml") -> str:
    """The PrometheusRule manifest for a rules file's text."""
    digest = hashlib.sha256(rules_text.encode("utf-8")).hexdigest()
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": NAME,
            "labels": {"app.kubernetes.io/name": NAME},
            "annotations": {"healthimaging-exporter/rules-sha256": digest},
        },
        "spec": {"groups": load_groups(rules_text)},
    }
    header = (
        f"# GENERATED from {source} by deploy/kubernetes/generate_prometheusrule.py; do not edit.\n"
        "# Regenerate: make mixin (deploy/mixin/generate.py, which also writes rules.yml).\n"
        "# kube-prometheus-stack only loads rules labelled with its release (ruleSelector):\n"
        "# add e.g. `release: kube-prometheus-stack` with a kustomize patch if yours needs it.\n"
    )
    body = yaml.dump(
        manifest, Dumper=_Dumper, sort_keys=False, width=4096, allow_unicode=True, indent=2
    )
    return header + body


def main(argv: list[str] | None = None) -> int:
    """Write the manifest, or with --check exit 1 when the committed one is out of date."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rules", type=Path, default=RULES, help="the Prometheus rules file")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="the manifest to write")
    parser.add_argument(
        "--check", action="store_true", help="compare instead of writing; exit 1 when they differ"
    )
    args = parser.parse_args(argv)
    try:
        expected = render(args.rules.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"generate_prometheusrule: {args.rules}: {exc}", file=sys.stderr)
        return 2
    if not args.check:
        args.output.write_text(expected, encoding="utf-8")
        return 0
    try:
        actual = args.output.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"generate_prometheusrule: {args.output}: {exc.strerror}", file=sys.stderr)
        return 1
    if actual == expected:
        return 0
    diff = difflib.unified_diff(
        actual.splitlines(keepends=True),
        expected.splitlines(keepends=True),
        str(args.output),
        "regenerated",
        n=1,
    )
    sys.stderr.writelines(list(diff)[:60])
    print(
        f"generate_prometheusrule: {args.output} is out of date with {args.rules}; "
        "run deploy/kubernetes/generate_prometheusrule.py",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
