"""`python -m bench --quick` runs every scenario and writes numeric figures (no timing asserted)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from bench.__main__ import SCENARIOS

ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_writes_every_scenario(tmp_path: Path) -> None:
    """Exit 0, and every scenario has figures whose values are finite numbers."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads(out.read_text())
    assert document["quick"] is True
    assert document["errors"] == {}
    assert set(document["scenarios"]) == set(SCENARIOS)
    for name, figures in document["scenarios"].items():
        assert figures, name
        for figure in figures:
            value = figure["value"]
            assert isinstance(value, int | float) and math.isfinite(value), (name, figure)
            baseline = figure["baseline"]
            assert baseline is None or isinstance(baseline, int | float), (name, figure)
            assert figure["target_met"] in (True, False, None), (name, figure)
    assert "scenario" in done.stdout  # the table's header
