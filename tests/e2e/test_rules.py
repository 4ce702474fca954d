"""promtool checks the shipped rules and config and runs the rule unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.servers import AMTOOL_NAMES, PROMTOOL_NAMES, find_binary

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RULE_TESTS = sorted((Path(__file__).parent / "rules").glob("*.test.yml"))
STEADY_STATE = Path(__file__).parent / "rules" / "steady.test.yml"


def run(argv: list[str], cwd: Path = ROOT) -> str:
    """Run a checker; fail with its whole output unless it exits 0."""
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)
    output = f"$ {' '.join(argv)}\n{result.stdout}{result.stderr}"
    assert result.returncode == 0, output
    return output


def alert_names() -> list[str]:
    """Every alert name of the shipped rules file."""
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def rule_tests(path: Path) -> list[dict[str, Any]]:
    """The alert_rule_test entries of a promtool test file."""
    tests: list[dict[str, Any]] = yaml.safe_load(path.read_text())["tests"]
    return [case for test in tests for case in test.get("alert_rule_test", [])]


def test_check_rules() -> None:
    """The shipped rules pass `promtool check rules`."""
    output = run([find_binary(*PROMTOOL_NAMES), "check", "rules", str(RULES)])
    assert f"SUCCESS: {len(alert_names())} rules found" in output


def test_check_prometheus_config() -> None:
    """The example config passes `promtool check config`, with rules.yml found beside it."""
    output = run([find_binary(*PROMTOOL_NAMES), "check", "config", str(PROMETHEUS_CONFIG)])
    assert "SUCCESS: 1 rule files found" in output


@pytest.mark.parametrize("path", RULE_TESTS, ids=lambda p: p.name)
def test_rule_unit_tests(path: Path) -> None:
    """Every rule unit test file passes `promtool test rules`."""
    output = run([find_binary(*PROMTOOL_NAMES), "test", "rules", path.name], cwd=path.parent)
    assert "SUCCESS" in output


def test_every_alert_is_tested_firing_and_silent_in_the_steady_state() -> None:
    """Each alert fires somewhere in the unit tests and is asserted silent when all is well."""
    names = alert_names()
    assert len(names) == len(set(names))
    firing = {
        case["alertname"] for path in RULE_TESTS for case in rule_tests(path) if case["exp_alerts"]
    }
    assert set(names) <= firing, f"never expected to fire: {set(names) - firing}"
    steady = rule_tests(STEADY_STATE)
    assert all(not case["exp_alerts"] for case in steady)
    assert set(names) <= {case["alertname"] for case in steady}


def test_alerts_carry_severity_and_runbook() -> None:
    """Every alert has a severity, a summary, a description and a runbook_url anchor."""
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    runbooks = (ROOT / "docs" / "runbooks.md").read_text()
    for rule in (r for g in groups for r in g["rules"] if "alert" in r):
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        url = annotations["runbook_url"]
        base = "https://github.com/healthimaging-exporter/healthimaging-exporter/blob/main/"
        assert url == f"{base}docs/runbooks.md#{name.lower()}", name
        assert f"\n## {name}\n" in runbooks, f"docs/runbooks.md has no section for {name}"


def test_check_alertmanager_config() -> None:
    """The example Alertmanager config passes `amtool check-config`."""
    output = run([find_binary(*AMTOOL_NAMES), "check-config", str(ALERTMANAGER_CONFIG)])
    assert "SUCCESS" in output


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (
            ["severity=critical", "alertname=HealthImagingCopyFailed"],
            "healthimaging-page,healthimaging-default",
        ),
        (["severity=warning", "alertname=HealthImagingPollStale"], "healthimaging-default"),
    ],
)
def test_alertmanager_routes_by_severity(labels: list[str], receivers: str) -> None:
    """Critical alerts page and reach the team receiver; warnings reach only the team receiver."""
    argv = [find_binary(*AMTOOL_NAMES), "config", "routes", "test"]
    output = run([*argv, f"--config.file={ALERTMANAGER_CONFIG}", *labels])
    assert output.splitlines()[1].strip() == receivers, output
