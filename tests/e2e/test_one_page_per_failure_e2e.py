"""One page per failure: exporter restarts, a rolling update and a Prometheus restart (issue 12).

Emulator -> exporter daemon (subprocess) -> a real Prometheus with the shipped rules.yml,
unchanged -> a real Alertmanager -> a webhook receiver in the test (tests/e2e/paging.py). One
Prometheus and one Alertmanager serve every scenario: each scenario fails its own image set, then
disturbs the whole pipeline, so every later disturbance also hits the failures of the scenarios
before it. Long scrape gaps (minutes, hours) and reshards are covered exactly by the promtool unit
tests in tests/e2e/rules/events.test.yml, reshards also by test_stuck_reason_reshard_e2e.py; here
the gaps are real and a few seconds long.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from exporter.emulator import EmulatorServer
from tests.e2e.paging import (
    DATASTORE,
    REGION,
    RULES,
    SEEDED_FAILURE,
    Pipeline,
    alerting_servers,
    exporter_config,
    last_failure,
)
from tests.e2e.servers import ExporterProcess

pytestmark = pytest.mark.e2e

JOB = "healthimaging-exporter"


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    """Emulator with fresh image sets per scenario, an exporter with its baseline, the servers."""
    emulator = EmulatorServer(port=0, dataset="demo").start()
    scenarios = ("kill_9", "sigterm", "rollout", "prometheus_restart", "old_series", "last")
    image_sets = {name: emulator.backend.create_image_set(DATASTORE) for name in scenarios}
    image_sets["seeded"] = SEEDED_FAILURE
    exporter = ExporterProcess(exporter_config(emulator, sorted(image_sets.values())))
    hook, alertmanager, prometheus = alerting_servers(RULES.read_text())
    running = Pipeline(emulator, hook, alertmanager, prometheus, exporter, image_sets)
    try:
        running.start(old_series="old_series")
        yield running
    finally:
        running.stop()


def test_each_failure_pages_once_through_restarts_a_rollout_and_a_prometheus_restart(
    pipeline: Pipeline,
) -> None:
    """Exactly one firing notification per failed image set and no resolved, whatever happens."""
    p = pipeline

    # The old failure of "old_series" and the seeded baseline failure page nothing.
    p.settle()
    assert p.sequences() == {name: [] for name in p.image_sets}, p.sequences()

    # (5) A second failure of an image set whose failed counter already exists, and the first
    # failure of an image set whose counter series never existed (every scenario below).
    p.wait_for_page(p.fail("old_series"))

    # (1) kill -9, a 5 s scrape gap, restart with the state kept.
    page = p.wait_for_page(p.fail("kill_9"))
    assert {k: page["labels"][k] for k in ("datastore_id", "image_set_id", "workflow_status")} == {
        "datastore_id": DATASTORE,
        "image_set_id": p.image_sets["kill_9"],
        "workflow_status": "COPY_FAILED",
    }
    counted = last_failure(p.exporter, p.image_sets["kill_9"])
    p.exporter.restart(gap=5, sig=signal.SIGKILL)
    p.wait_for_scrape(p.exporter)
    # The restarted exporter exports the persisted time, not a new one.
    assert last_failure(p.exporter, p.image_sets["kill_9"]) == counted
    p.settle()
    assert p.sequences()["kill_9"] == ["firing"], p.sequences()

    # (1) SIGTERM, a 5 s scrape gap, restart with the state kept.
    p.wait_for_page(p.fail("sigterm"))
    p.exporter.restart(gap=5, sig=signal.SIGTERM)
    p.wait_for_scrape(p.exporter)

    # (2) A rolling update: the old process stops, a new one on another address (a new
    # `instance` label) takes over the same state file.
    p.wait_for_page(p.fail("rollout"))
    old = p.exporter
    old.kill(signal.SIGTERM)
    p.retired.append(old)
    new = ExporterProcess(
        exporter_config(p.emulator, sorted(p.image_sets.values())), state_path=old.state_path
    )
    new.start()
    p.exporter = new
    p.prometheus.set_file_sd_targets(JOB, [new.address])
    p.wait_for_scrape(new)
    assert last_failure(new, p.image_sets["kill_9"]) == counted

    # (4) Prometheus restarts with its TSDB kept.
    p.wait_for_page(p.fail("prometheus_restart"))
    p.prometheus.restart(sig=signal.SIGTERM)
    p.wait_for_scrape(p.exporter)
    p.settle()

    # A last failure after every disturbance: its page shows the pipeline still delivers.
    p.wait_for_page(p.fail("last"))
    p.settle()

    expected = {name: ["firing"] for name in p.image_sets}
    expected["seeded"] = []
    assert p.sequences() == expected

    # The page tells the operator where to look.
    annotations = p.wait_for_page(p.image_sets["kill_9"])["annotations"]
    image_set = p.image_sets["kill_9"]
    assert annotations["runbook_url"].endswith("docs/runbooks.md#healthimagingcopyfailed")
    assert annotations["console_url"] == (
        f"https://{REGION}.console.aws.amazon.com/medical-imaging/home?region={REGION}"
        f"#/dataStores/{DATASTORE}/imageSets/{image_set}"
    )
    assert annotations["command"] == (
        f"aws medical-imaging list-image-set-versions --region {REGION} "
        f"--datastore-id {DATASTORE} --image-set-id {image_set}"
    )
