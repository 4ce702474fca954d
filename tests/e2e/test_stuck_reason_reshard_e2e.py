"""Stuck workflows, failure reasons and reshards, end to end (issue 12).

The pipeline of tests/e2e/paging.py (emulator, exporter processes, a real Prometheus and
Alertmanager, a webhook) with rules generated from the mixin with a stuck-workflow threshold of
ten minutes instead of an hour (the only change from the shipped rules): one version is back-dated
in COPYING by twenty minutes, so it is stuck from the start, while another starts COPYING with the
test and must not page before its ten minutes (the test takes far less). One Prometheus and one
Alertmanager serve every scenario, in one test, so each disturbance (a kill -9 restart, a reshard
from one exporter process to three and back, each shard with its own state file and
--shard N --total-shards M) also hits the alerts of the scenarios before it.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.emulator import EmulatorServer
from exporter.poller import shard_of
from tests.e2e.paging import (
    DATASTORE,
    JOB,
    SEEDED_FAILURE,
    Pipeline,
    alerting_servers,
    exporter_config,
)
from tests.e2e.servers import ExporterProcess
from tests.mixin import generate

pytestmark = pytest.mark.e2e

STUCK = "HealthImagingWorkflowStuck"
THRESHOLD = 600
# The back-dated COPYING version: the second of its image set.
STUCK_VERSION = "2"
INVALID_REQUEST = "INVALID_REQUEST: Series of SourceImageSet and DestinationImageSet don't match."
# Scenarios whose image sets must belong to shard 1 or 2 of 3: they move to another process when
# total_shards goes from 1 to 3 and back.
MOVING = ("stuck_through_reshard", "before_move", "during_move_back", "old_series")
SCENARIOS = ("stuck", "fresh_copy", "reason_code", "reason_other", *MOVING)


def shards(total: int) -> list[list[str]]:
    """Command-line flags of each shard of `total`."""
    return [["--shard", str(n), "--total-shards", str(total)] for n in range(total)]


def create_image_sets(emulator: EmulatorServer) -> dict[str, str]:
    """A fresh image set per scenario; those in MOVING are not in shard 0 of 3."""
    image_sets: dict[str, str] = {}
    for name in SCENARIOS:
        while True:
            image_set = emulator.backend.create_image_set(DATASTORE)
            if name not in MOVING or shard_of(image_set, 3) != 0:
                break
        image_sets[name] = image_set
    image_sets["seeded"] = SEEDED_FAILURE
    return image_sets


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    """The servers, and one exporter process (shard 0 of 1) that has its baseline."""
    config = tmp_path / "threshold.libsonnet"
    config.write_text(f"{{ stuckWorkflowThresholdSeconds: {THRESHOLD} }}\n")
    done = generate("--config", str(config), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    rules = (tmp_path / "out" / "rules.yml").read_text()

    emulator = EmulatorServer(port=0, dataset="demo").start()
    image_sets = create_image_sets(emulator)
    backend = emulator.backend
    # In COPYING since twice the threshold before the exporter starts (its baseline sees it),
    # and through the reshards; a copy that starts now.
    for name in ("stuck", "stuck_through_reshard"):
        version = backend.add_version(
            DATASTORE, image_sets[name], "COPYING", updated_at=time.time() - 2 * THRESHOLD
        )
        assert version == STUCK_VERSION
    backend.add_version(DATASTORE, image_sets["fresh_copy"], "COPYING")
    config_of = exporter_config(emulator, sorted(image_sets.values()))
    exporter = ExporterProcess(config_of, args=shards(1)[0])
    hook, alertmanager, prometheus = alerting_servers(rules)
    running = Pipeline(emulator, hook, alertmanager, prometheus, exporter, image_sets)
    try:
        running.start(old_series="old_series")
        yield running
    finally:
        running.stop()


def reshard(p: Pipeline, total: int, state_paths: list[Path | None]) -> list[ExporterProcess]:
    """Stop the scraped processes, start `total` shards on these state files (None: a new one).

    Returns the new processes; p.exporter becomes shard 0, the others are kept in p.retired for
    the clean-up.
    """
    config = exporter_config(p.emulator, sorted(p.image_sets.values()))
    processes = [
        ExporterProcess(config, args=flags, state_path=path)
        for flags, path in zip(shards(total), state_paths, strict=True)
    ]
    for process in processes:
        process.start()
    p.retired.extend(processes[1:])
    p.exporter = processes[0]
    p.prometheus.set_file_sd_targets(JOB, [x.address for x in processes])
    for process in processes:
        p.wait_for_scrape(process)
    return processes


def stop_all(p: Pipeline, processes: list[ExporterProcess]) -> None:
    """SIGTERM every process (their state files and directories stay) and stop scraping them."""
    for process in processes:
        process.kill(signal.SIGTERM)
    if p.exporter not in p.retired:
        p.retired.append(p.exporter)
    p.prometheus.set_file_sd_targets(JOB, [])


def test_stuck_workflows_reasons_and_reshards_page_once(pipeline: Pipeline) -> None:
    """One firing per stuck version or failure, reasons in the annotations, through reshards."""
    p = pipeline
    ids = p.image_sets

    # A version stuck in COPYING pages once, naming the data store, image set and status.
    stuck = p.wait_for_page(ids["stuck"], STUCK)
    assert {k: stuck["labels"][k] for k in ("datastore_id", "image_set_id", "workflow_status")} == {
        "datastore_id": DATASTORE,
        "image_set_id": ids["stuck"],
        "workflow_status": "COPYING",
    }
    assert stuck["labels"]["severity"] == "critical"
    assert stuck["annotations"]["summary"].startswith(
        f"Image set {ids['stuck']} of data store {DATASTORE} has been COPYING for 20m"
    )
    assert stuck["annotations"]["runbook_url"].endswith("#healthimagingworkflowstuck")
    p.wait_for_page(ids["stuck_through_reshard"], STUCK)

    # Failures with and without a code in their message: the reason is in the annotations.
    code = p.wait_for_page(p.fail("reason_code", message=INVALID_REQUEST))
    assert code["annotations"]["reason"] == "INVALID_REQUEST"
    assert "reason" not in code["labels"]
    other = p.wait_for_page(p.fail("reason_other", message="the copy went wrong"))
    assert other["annotations"]["reason"] == "other"

    # kill -9 and a 5 s scrape gap: nothing resolves, nothing pages again.
    p.exporter.restart(gap=5, sig=signal.SIGKILL)
    p.wait_for_scrape(p.exporter)
    p.settle()
    assert p.notifications(ids["stuck"], STUCK) == ["firing"]
    assert p.notifications(ids["reason_code"]) == ["firing"]

    # The stuck version finishes: the alert resolves, once.
    p.emulator.backend.set_workflow_status(DATASTORE, ids["stuck"], STUCK_VERSION, "COPIED")
    p.wait_for_page(ids["stuck"], STUCK, status="resolved")

    # A failure before the reshard, then total_shards 1 -> 3: shard 0 keeps the state file, the
    # two new shards start with their own. The image sets of MOVING move to them.
    p.wait_for_page(p.fail("before_move"))
    single = p.exporter
    stop_all(p, [single])
    sharded = reshard(p, 3, [single.state_path, None, None])
    p.settle()

    # total_shards 3 -> 1: the shards stop, an image set of shard 1 or 2 fails while it moves
    # back, and shard 0's process (the one that watched the data store before) takes them all.
    stop_all(p, sharded)
    p.fail("during_move_back")
    reshard(p, 1, [sharded[0].state_path])
    p.wait_for_page(ids["during_move_back"])
    p.settle()

    failures = p.sequences()
    stuck_pages = p.sequences(STUCK)
    paged = ("reason_code", "reason_other", "before_move", "during_move_back")
    expected_failures: dict[str, list[str]] = {name: [] for name in ids} | {
        name: ["firing"] for name in paged
    }
    expected_stuck: dict[str, list[str]] = {name: [] for name in ids} | {
        "stuck": ["firing", "resolved"],
        "stuck_through_reshard": ["firing"],
    }
    assert (failures, stuck_pages) == (expected_failures, expected_stuck)
