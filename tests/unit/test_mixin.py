"""The rules, PrometheusRule and dashboard in deploy/ are generated from the jsonnet mixin."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.mixin import OUTPUTS, ROOT, generate, generate_custom

SHIPPED = {
    "rules.yml": ROOT / "deploy" / "prometheus" / "rules.yml",
    "prometheusrule.yaml": ROOT / "deploy" / "kubernetes" / "prometheusrule.yaml",
    "dashboard.json": ROOT / "deploy" / "grafana" / "dashboard.json",
}
RAW_METRIC = re.compile(r"(?<![\w:])(healthimaging_\w+)(?![\w:])(\{[^}]*\})?")


def rules_of(text: str) -> list[dict[str, Any]]:
    """Every rule of a rules file's text."""
    groups: list[dict[str, Any]] = yaml.safe_load(text)["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_checked_in_files_match_a_fresh_generation() -> None:
    """rules.yml, prometheusrule.yaml and dashboard.json are what the mixin generates now."""
    done = generate("--check")
    assert done.returncode == 0, done.stderr
    for path in SHIPPED.values():
        assert "GENERATED" in path.read_text() or path.suffix == ".json", path


def test_check_names_every_stale_file(tmp_path: Path) -> None:
    """--check exits 1 and names each file that differs from a fresh generation."""
    done = generate("--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    for name in OUTPUTS:
        assert (tmp_path / name).read_text() == SHIPPED[name].read_text(), name
    assert generate("--check", "--out", str(tmp_path)).returncode == 0

    rules = tmp_path / "rules.yml"
    rules.write_text(rules.read_text().replace("severity: warning", "severity: info", 1))
    (tmp_path / "dashboard.json").unlink()
    done = generate("--check", "--out", str(tmp_path))
    assert done.returncode == 1
    assert "out of date" in done.stderr
    assert str(rules) in done.stderr and str(tmp_path / "dashboard.json") in done.stderr
    assert str(tmp_path / "prometheusrule.yaml") not in done.stderr.splitlines()[-1]
    assert "-      severity: info" in done.stderr and "+      severity: warning" in done.stderr


def test_jsonnet_errors_are_one_line(tmp_path: Path) -> None:
    """A broken --config is reported as a jsonnet error, exit 2, without a traceback."""
    config = tmp_path / "broken.libsonnet"
    config.write_text("{ exporterSelector: }")
    done = generate("--config", str(config), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.startswith("generate: jsonnet:") and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_default_selectors_keep_the_shipped_behaviour() -> None:
    """Only `up` and ExporterDown's lookback pick the job; other metrics are read whatever it is."""
    rules = {
        r.get("alert") or r["record"]: r["expr"] for r in rules_of(SHIPPED["rules.yml"].read_text())
    }
    down = rules["HealthImagingExporterDown"]
    assert 'absent(up{job="healthimaging-exporter"})' in down
    for name, expr in rules.items():
        if name != "HealthImagingExporterDown":
            assert "job=" not in expr, name
    assert "> 600)" in rules["HealthImagingPollStale"]
    assert rules["HealthImagingThrottlingSustained"].rstrip().endswith(") > 0.1")
    stuck = rules["HealthImagingWorkflowStuck"]
    assert stuck.count("> 3600") == 2 and "[15m]" in stuck and "[30m]" not in stuck


def test_custom_config_reaches_every_rule_and_panel(tmp_path: Path) -> None:
    """Selectors, thresholds, runbook base and dashboard settings all come from _config."""
    out = generate_custom(tmp_path)
    rules = rules_of((out / "rules.yml").read_text())
    for rule in rules:
        for name, selector in RAW_METRIC.findall(rule["expr"]):
            assert 'cluster="eu-1"' in selector, f"{name} in {rule['expr']!r}"
    exprs = {r.get("alert") or r["record"]: r["expr"] for r in rules}
    assert 'absent(up{job="hi", cluster="eu-1"})' in exprs["HealthImagingExporterDown"]
    assert "healthimaging-exporter" not in "".join(exprs.values())
    assert "> 1200)" in exprs["HealthImagingPollStale"]
    assert exprs["HealthImagingThrottlingSustained"].rstrip().endswith(") > 0.25")
    stuck = next(r for r in rules if r.get("alert") == "HealthImagingWorkflowStuck")
    assert stuck["expr"].count("> 7200") == 2 and "3600" not in stuck["expr"]
    assert "[30m]" in stuck["expr"] and "[15m]" not in stuck["expr"]
    assert "(threshold 7200 s)" in stuck["annotations"]["description"]
    for rule in (r for r in rules if "alert" in r):
        url = rule["annotations"]["runbook_url"]
        assert url == f"https://wiki.example.org/healthimaging/runbooks#{rule['alert'].lower()}"

    manifest = yaml.safe_load((out / "prometheusrule.yaml").read_text())
    assert manifest["spec"]["groups"] == yaml.safe_load((out / "rules.yml").read_text())["groups"]

    dashboard = json.loads((out / "dashboard.json").read_text())
    assert (dashboard["title"], dashboard["uid"]) == ("HealthImaging (eu-1)", "hi-eu-1")
    assert (dashboard["tags"], dashboard["refresh"]) == (["eu-1"], "5m")
    assert dashboard["links"][0]["url"] == "https://wiki.example.org/healthimaging/runbooks"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["cluster"]["hide"] == 0
    assert 'cluster="eu-1"' in variables["cluster"]["definition"]
    oldest = next(p for p in dashboard["panels"] if p["title"] == "Oldest in-progress version age")
    steps = oldest["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == 7200
    exprs_in_panels = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs_in_panels) >= 25
    for expr in exprs_in_panels:
        for name, selector in RAW_METRIC.findall(expr):
            assert 'cluster="eu-1"' in selector and 'job=~"$job"' in selector, (name, expr)


def test_mixin_layout_follows_the_ecosystem() -> None:
    """mixin.libsonnet, config.libsonnet and alerts/, rules/, dashboards/ as other mixins ship."""
    mixin = ROOT / "deploy" / "mixin"
    for path in ("mixin.libsonnet", "config.libsonnet"):
        assert (mixin / path).is_file(), path
    for folder in ("alerts", "rules", "dashboards"):
        assert list((mixin / folder).glob("*.libsonnet")), folder
    config = (mixin / "config.libsonnet").read_text()
    for key in ("exporterJobSelector", "exporterSelector", "clusterLabel", "runbookURLBase"):
        assert f"{key}:" in config, key


def test_command_line_entry_points_agree_with_the_generated_files() -> None:
    """alerts.jsonnet and dashboards.jsonnet (for the jsonnet CLI) give the shipped content."""
    import _gojsonnet  # type: ignore[import-not-found]

    mixin = ROOT / "deploy" / "mixin"
    alerts = _gojsonnet.evaluate_file(str(mixin / "alerts.jsonnet"), jpathdir=[str(mixin)])
    # The file's text is the YAML document that `jsonnet -S` would print.
    shipped = yaml.safe_load(SHIPPED["rules.yml"].read_text())
    assert yaml.safe_load(json.loads(alerts)) == shipped
    dashboards = json.loads(
        _gojsonnet.evaluate_file(str(mixin / "dashboards.jsonnet"), jpathdir=[str(mixin)])
    )
    assert list(dashboards) == ["healthimaging-exporter.json"]
    assert dashboards["healthimaging-exporter.json"] == json.loads(
        SHIPPED["dashboard.json"].read_text()
    )
