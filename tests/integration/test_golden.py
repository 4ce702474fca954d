"""/metrics for the seed example, compared byte for byte with tests/data/golden/seed-example.prom.

The seed is the CLI reference's worked example of list-image-set-versions (image set
ea92b0d8838c72a3f25d00d13616f87e, versions 1-4, version 2 COPY_FAILED), which the emulator's demo
dataset contains. The clock is fixed; families that measure this run (durations and `_created`
times) are left out. After an intended change of the exposition, regenerate the file with

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/integration/test_golden.py

and review the diff like code.
"""

from __future__ import annotations

import os
from pathlib import Path

from exporter.config import parse_config
from exporter.emulator import EmulatorServer
from exporter.service import ExporterService
from tests.helpers import DEMO_DATASTORE, DEMO_IMAGE_SET

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden" / "seed-example.prom"
FIXED_TIME = 1_700_000_000.0
# Families whose values depend on how long this run took, not on what it saw.
RUN_TIMING = ("healthimaging_exporter_poll_duration_seconds",)


def without_run_timing(exposition: str) -> str:
    """Drop whole families (HELP, TYPE and samples) that measure this run's timing."""
    kept: list[str] = []
    dropping = False
    for line in exposition.splitlines(keepends=True):
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            dropping = name.endswith("_created") or name in RUN_TIMING
        if not dropping:
            kept.append(line)
    return "".join(kept)


def test_metrics_of_the_seed_example_match_the_golden_file(emulator: EmulatorServer) -> None:
    raw = {
        "aws": {"endpoint_url": emulator.url},
        "datastores": [{"datastore_id": DEMO_DATASTORE, "image_sets": [DEMO_IMAGE_SET]}],
        "state": {"path": ":memory:"},
        # process_* and python_* describe this test process, not what the exporter saw.
        "web": {"disable_exporter_metrics": True},
    }
    service = ExporterService(parse_config(raw, "golden"), clock=lambda: FIXED_TIME)
    try:
        assert service.poll().ok
        body = without_run_timing(service.exposition().text.decode())
    finally:
        service.close()
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(body)
    assert body == GOLDEN.read_text(), "regenerate with UPDATE_GOLDEN=1 if the change is intended"
