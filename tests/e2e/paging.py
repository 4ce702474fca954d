"""The paging pipeline of the end-to-end alerting tests (issue 12), shared by their modules.

Emulator -> exporter daemons (subprocesses) -> a real Prometheus with generated rules -> a real
Alertmanager with the shipped deploy/alertmanager/alertmanager.yml at second-scale timers
(shipped_alertmanager_config) -> a webhook receiver in the test. The paging route makes each
alert's image set (and status) a group of its own, so each payload to the paging receiver that
lists an alert as firing is a page for it. group_wait and group_interval are 1 s, so a resolve
and a re-page show up within seconds; repeat_interval is one hour, so a repeat of a page cannot
be mistaken for a re-page.
"""

from __future__ import annotations

import calendar
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
COPY_FAILED = "HealthImagingCopyFailed"
# Alertmanager resolves an alert 4 x max(resend delay, evaluation interval) after Prometheus last
# sent it; with 10 s that is 40 s, longer than a Prometheus restart of the tests takes.
RESEND_DELAY = "10s"


def alerting_servers(rules: str) -> tuple[WebhookReceiver, AlertmanagerServer, PrometheusServer]:
    """A webhook, the shipped Alertmanager config posting to it, a Prometheus with these rules.

    Nothing is started; Prometheus scrapes the file_sd job JOB (set_file_sd_targets).
    """
    hook = WebhookReceiver()
    alertmanager = AlertmanagerServer(
        shipped_alertmanager_config(ALERTMANAGER, hook.url.rsplit("/", 1)[0])
    )
    prometheus = PrometheusServer(
        prometheus_config(
            rule_files=["rules.yml"], alertmanagers=[alertmanager.address], file_sd_jobs=[JOB]
        ),
        files={"rules.yml": rules},
        resend_delay=RESEND_DELAY,
    )
    return hook, alertmanager, prometheus


@dataclass
class Pipeline:
    """The shared servers and the exporter processes currently scraped."""

    emulator: EmulatorServer
    hook: WebhookReceiver
    alertmanager: AlertmanagerServer
    prometheus: PrometheusServer
    exporter: ExporterProcess
    image_sets: dict[str, str]
    retired: list[ExporterProcess] = field(default_factory=list)

    def fail(
        self,
        scenario: str,
        status: str = "COPY_FAILED",
        message: str | None = None,
        updated_at: float | None = None,
    ) -> str:
        """Add a failed version to the scenario's image set; return the image set id."""
        image_set = self.image_sets[scenario]
        self.emulator.backend.add_version(
            DATASTORE, image_set, status, message=message, updated_at=updated_at
        )
        return image_set

    def notifications(self, image_set: str, alert: str = COPY_FAILED) -> list[str]:
        """Statuses of every page of an alert of an image set, in order."""
        wanted = {"alertname": alert, "image_set_id": image_set}
        return [
            a["status"]
            for payload in self.hook.payloads
            if payload["receiver"] == PAGER
            for a in payload["alerts"]
            if all(a["labels"].get(k) == v for k, v in wanted.items())
        ]

    def sequences(self, alert: str = COPY_FAILED) -> dict[str, list[str]]:
        """Notification statuses of an alert per scenario."""
        return {name: self.notifications(i, alert) for name, i in self.image_sets.items()}

    def wait_for_page(
        self, image_set: str, alert: str = COPY_FAILED, status: str = "firing"
    ) -> dict[str, Any]:
        """Wait for a notification of an image set's alert with that status; return the alert."""
        return self.hook.wait_for_alert(
            {"alertname": alert, "image_set_id": image_set}, status=status, timeout=60
        )

    def start(self, old_series: str) -> None:
        """Start every part, Prometheus last and scraping the exporter.

        Before Prometheus ever sees it, the exporter baselines every image set and counts a
        failure of `old_series`, which is then aged by two hours: an image set whose failed
        counter and last-failure series exist from a failure outside the alert window.
        """
        self.exporter.start()
        self.hook.start()
        self.alertmanager.start()
        count_old_failure(self, old_series)
        self.prometheus.set_file_sd_targets(JOB, [self.exporter.address])
        self.prometheus.start()
        self.wait_for_scrape(self.exporter)

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

    def stop(self) -> None:
        """Stop every server and exporter process."""
        self.prometheus.stop()
        self.alertmanager.stop()
        self.hook.stop()
        # The current exporter first: the retired ones' directories may hold its state file.
        for process in (self.exporter, *reversed(self.retired)):
            process.stop()
        self.emulator.stop()


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


def count_old_failure(pipeline: Pipeline, scenario: str, age: float = 7200) -> None:
    """Before Prometheus ever sees it, make the exporter count a failure and age it by `age`.

    The result is an image set whose failed counter and last-failure series exist from a failure
    outside the alert window; the failed version's updatedAt is as old (a reshard's handover
    tells changes from the baseline by it). The exporter has polled once and is running again
    afterwards.
    """
    exporter = pipeline.exporter
    wait_until(lambda: "healthimaging_up{" in exporter.metrics(), 60, what="a first poll")
    old = pipeline.fail(scenario, updated_at=time.time() - age)
    wait_until(
        lambda: f'image_set_id="{old}",workflow_status="COPY_FAILED"' in exporter.metrics(),
        60,
        what="the old failure counted",
    )
    exporter.kill(signal.SIGTERM)
    age_last_failure(exporter.state_path, old, age)
    exporter.start()
