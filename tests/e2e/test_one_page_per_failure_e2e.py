"""One page per failure: exporter restarts, a rolling update and a Prometheus restart (issue 12).

Emulator -> exporter daemon (subprocess) -> a real Prometheus with the shipped rules.yml,
unchanged -> a real Alertmanager -> a webhook receiver in the test. One Prometheus and one
Alertmanager serve every scenario: each scenario fails its own image set, then disturbs the whole
pipeline, so every later disturbance also hits the failures of the scenarios before it.

Alertmanager runs the shipped deploy/alertmanager/alertmanager.yml with second-scale timers
(shipped_alertmanager_config): its paging route makes each failed image set a group of its own, so
each payload to the paging receiver that lists an alert as firing is a page for it. group_wait and
group_interval are 1 s, so a resolve and a re-page show up within seconds, and repeat_interval is
one hour, so a repeat of a page cannot be mistaken for a re-page. Long scrape gaps (minutes,
hours) and reshards are covered exactly by the promtool unit tests in
tests/e2e/rules/events.test.yml; here the gaps are real and a few seconds long.
"""

from __future__ import annotations

import calendar
import signal
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from exporter.emulator import EmulatorServer
from tests.e2e.servers import (
    AlertmanagerServer,
    ExporterProcess,
    PrometheusServer,
    WebhookReceiver,
    prometheus_config,
    shipped_alertmanager_config,
    wait_until,
)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
PAGER = "healthimaging-page"
JOB = "healthimaging-exporter"
DATASTORE = "12345678901234567890123456789012"
# The demo seed's image set with a COPY_FAILED version: the exporter's baseline records it and
# must never page for it.
SEEDED_FAILURE = "ea92b0d8838c72a3f25d00d13616f87e"
REGION = "eu-west-1"
ALERT = "HealthImagingCopyFailed"
# Alertmanager resolves an alert 4 x max(resend delay, evaluation interval) after Prometheus last
# sent it; with 10 s that is 40 s, longer than the Prometheus restart of the test takes.
RESEND_DELAY = "10s"


@dataclass
class Pipeline:
    """The shared servers and the exporter process currently scraped."""

    emulator: EmulatorServer
    hook: WebhookReceiver
    alertmanager: AlertmanagerServer
    prometheus: PrometheusServer
    exporter: ExporterProcess
    image_sets: dict[str, str]
    retired: list[ExporterProcess] = field(default_factory=list)

    def fail(self, scenario: str) -> str:
        """Add a COPY_FAILED version to the scenario's image set; return the image set id."""
        image_set = self.image_sets[scenario]
        self.emulator.backend.add_version(DATASTORE, image_set, "COPY_FAILED")
        return image_set

    def notifications(self, image_set: str) -> list[str]:
        """Statuses of every page of the COPY_FAILED alert of an image set, in order."""
        return [
            alert["status"]
            for payload in self.hook.payloads
            if payload["receiver"] == PAGER
            for alert in payload["alerts"]
            if alert["labels"].get("alertname") == ALERT
            and alert["labels"].get("image_set_id") == image_set
        ]

    def sequences(self) -> dict[str, list[str]]:
        """Notification statuses per scenario."""
        return {name: self.notifications(i) for name, i in self.image_sets.items()}

    def wait_for_page(self, image_set: str) -> dict[str, Any]:
        """Wait for the firing notification of an image set's COPY_FAILED alert."""
        return self.hook.wait_for_alert(
            {"alertname": ALERT, "image_set_id": image_set}, status="firing", timeout=60
        )

    def wait_for_scrape(self, exporter: ExporterProcess) -> None:
        """Wait until Prometheus scrapes the exporter at its address and has its data store up."""
        self.prometheus.wait_for_query(
            f'healthimaging_up{{instance="{exporter.address}",datastore_id="{DATASTORE}"}} == 1',
            timeout=60,
        )

    def settle(self, evaluations: int = 3) -> None:
        """Wait for several rule evaluations from now, and the Alertmanager's group interval."""
        start = time.time()

        def evaluated() -> bool:
            groups = self.prometheus.api("rules")["groups"]
            events = next(g for g in groups if g["name"] == "healthimaging-exporter.events")
            last = events["lastEvaluation"]
            return bool(last) and _unix(last) > start + evaluations

        wait_until(evaluated, timeout=60, what=f"{evaluations} rule evaluations")
        # group_interval is 1 s: a notification caused by the last evaluation leaves within it.
        time.sleep(2)


def _unix(rfc3339: str) -> float:
    """Unix time of a Prometheus API timestamp such as 2026-11-29T13:25:38.123456789Z."""
    head, _, fraction = rfc3339.rstrip("Z").partition(".")
    whole = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
    return whole + (float(f"0.{fraction[:6]}") if fraction else 0.0)


def last_failure(exporter: ExporterProcess, image_set: str) -> str:
    """The exporter's last-failure sample line of an image set's COPY_FAILED status."""
    prefix = "healthimaging_image_set_last_failure_timestamp_seconds{"
    label = f'image_set_id="{image_set}",workflow_status="COPY_FAILED"'
    lines = [x for x in exporter.metrics().splitlines() if x.startswith(prefix) and label in x]
    assert len(lines) == 1, lines
    return lines[0]


def exporter_config(emulator: EmulatorServer, image_sets: list[str]) -> dict[str, Any]:
    """The exporter's config: one data store, the listed image sets, polled every second."""
    return {
        "aws": {"region": REGION, "endpoint_url": emulator.url},
        "poll": {"interval_seconds": 1},
        "datastores": [{"datastore_id": DATASTORE, "image_sets": image_sets}],
    }


def age_last_failure(state_path: Path, image_set: str, seconds: float) -> None:
    """Move an image set's persisted last-failure time back, as if it failed long ago."""
    with sqlite3.connect(state_path) as db:
        changed = db.execute(
            "UPDATE counters SET value = value - ? WHERE family = 'last_failure' "
            "AND datastore_id = ? AND image_set_id = ?",
            (seconds, DATASTORE, image_set),
        ).rowcount
    assert changed == 1


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    """Emulator with fresh image sets per scenario, an exporter with its baseline, the servers."""
    emulator = EmulatorServer(port=0, dataset="demo").start()
    scenarios = ("kill_9", "sigterm", "rollout", "prometheus_restart", "old_series", "last")
    image_sets = {name: emulator.backend.create_image_set(DATASTORE) for name in scenarios}
    image_sets["seeded"] = SEEDED_FAILURE
    exporter = ExporterProcess(exporter_config(emulator, sorted(image_sets.values())))
    hook = WebhookReceiver()
    alertmanager = AlertmanagerServer(
        shipped_alertmanager_config(ALERTMANAGER, hook.url.rsplit("/", 1)[0])
    )
    prometheus = PrometheusServer(
        prometheus_config(
            rule_files=["rules.yml"], alertmanagers=[alertmanager.address], file_sd_jobs=[JOB]
        ),
        files={"rules.yml": RULES.read_text()},
        resend_delay=RESEND_DELAY,
    )
    running = Pipeline(emulator, hook, alertmanager, prometheus, exporter, image_sets)
    try:
        exporter.start()
        hook.start()
        alertmanager.start()
        # Before Prometheus ever sees it, the exporter baselines every image set and counts a
        # failure of "old_series", which is then aged by two hours: an image set whose failed
        # counter and last-failure series exist from a failure outside the alert window.
        wait_until(lambda: "healthimaging_up{" in exporter.metrics(), 60, what="a first poll")
        old = running.fail("old_series")
        wait_until(
            lambda: f'image_set_id="{old}",workflow_status="COPY_FAILED"' in exporter.metrics(),
            60,
            what="the old failure counted",
        )
        exporter.kill(signal.SIGTERM)
        age_last_failure(exporter.state_path, old, 7200)
        exporter.start()
        prometheus.set_file_sd_targets(JOB, [exporter.address])
        prometheus.start()
        running.wait_for_scrape(exporter)
        yield running
    finally:
        prometheus.stop()
        alertmanager.stop()
        hook.stop()
        # The current exporter first: the retired ones' directories hold its state file.
        for process in (running.exporter, *reversed(running.retired)):
            process.stop()
        emulator.stop()


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
