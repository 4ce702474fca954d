"""Run the mixin's generator (deploy/mixin/generate.py) as users do, for the mixin tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "deploy" / "mixin" / "generate.py"
OUTPUTS = ("rules.yml", "prometheusrule.yaml", "dashboard.json")

# Every setting of config.libsonnet changed from its default.
CUSTOM_CONFIG = """{
  exporterJobSelector: 'job="hi", cluster="eu-1"',
  exporterSelector: 'cluster="eu-1"',
  showMultiCluster: true,
  pollStaleThresholdSeconds: 1200,
  throttlingRatioThreshold: 0.25,
  stuckWorkflowThresholdSeconds: 7200,
  stuckWorkflowLookback: '30m',
  runbookURLBase: 'https://wiki.example.org/healthimaging/runbooks',
  dashboardTitle: 'HealthImaging (eu-1)',
  dashboardUID: 'hi-eu-1',
  dashboardTags: ['eu-1'],
  dashboardRefresh: '5m',
}
"""


def generate(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the generator with args; its exit code is the caller's to check."""
    return subprocess.run(
        [sys.executable, str(GENERATOR), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def generate_custom(tmp_path: Path) -> Path:
    """Generate with CUSTOM_CONFIG into tmp_path/out; return that directory."""
    config = tmp_path / "custom.libsonnet"
    config.write_text(CUSTOM_CONFIG)
    out = tmp_path / "out"
    done = generate("--config", str(config), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    return out
