"""promtool accepts the rules the mixin generates with other settings, and they still work."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.e2e.servers import PROMTOOL_NAMES, find_binary
from tests.mixin import generate, generate_custom

pytestmark = pytest.mark.e2e

RULE_TESTS = Path(__file__).parent / "rules"


def promtool(*args: str, cwd: Path) -> str:
    """Run promtool; fail with its output unless it exits 0."""
    argv = [find_binary(*PROMTOOL_NAMES), *args]
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}"
    return done.stdout


def test_customised_rules_pass_promtool_check(tmp_path: Path) -> None:
    """Every setting changed, the generated rules file is still valid."""
    out = generate_custom(tmp_path)
    groups = yaml.safe_load((out / "rules.yml").read_text())["groups"]
    count = sum(len(group["rules"]) for group in groups)
    assert count >= 12
    assert f"SUCCESS: {count} rules found" in promtool("check", "rules", "rules.yml", cwd=out)


def test_rule_unit_tests_pass_with_an_exporter_selector(tmp_path: Path) -> None:
    """With a selector every test series matches, the promtool rule tests pass unchanged.

    This proves the selector reaches the expressions without changing what they compute.
    """
    config = tmp_path / "selector.libsonnet"
    # The test series have no cluster label, so they all match (an absent label is "").
    config.write_text("""{ exporterSelector: 'cluster!="elsewhere"' }""")
    done = generate("--config", str(config), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "rules.yml").read_text().count('cluster!="elsewhere"') >= 15
    tests = []
    for source in sorted(RULE_TESTS.glob("*.test.yml")):
        data = yaml.safe_load(source.read_text())
        data["rule_files"] = ["rules.yml"]
        copy = tmp_path / source.name
        copy.write_text(yaml.safe_dump(data, sort_keys=False))
        tests.append(copy.name)
    assert len(tests) >= 3
    assert "SUCCESS" in promtool("test", "rules", *tests, cwd=tmp_path)
