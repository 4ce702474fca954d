"""Emulator -> exporter -> Prometheus (shipped rules) -> Alertmanager -> webhook, for real."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.emulator import EmulatorServer
from tests.dashboard_queries import documented_metrics, family_of, metric_names, panel_queries
from tests.e2e.servers import (
    AlertmanagerServer,
    ExporterProcess,
    PrometheusServer,
    WebhookReceiver,
    prometheus_config,
    shipped_alertmanager_config,
    wait_until,
)
from tests.helpers import DEMO_DATASTORE, DEMO_IMAGE_SET

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
DATASTORE = DEMO_DATASTORE
IMAGE_SET = DEMO_IMAGE_SET
JOB = "healthimaging-exporter"

# The shipped rules wait minutes before some alerts fire (`for:` of 5 to 30 minutes, and
# HealthImagingPollStale's 600 s); a test cannot. The test's copy of rules.yml changes exactly
# these and nothing else: every `for:` becomes FOR, and PollStale's "> 600" becomes "> 5".
# The event alerts (failed, forced) have no `for:` and run unchanged.
FOR = "2s"
THRESHOLDS = {
    "HealthImagingPollStale": ("> 600", "> 5"),
    "HealthImagingImportStuck": ("> 3600", "> 5"),  # SUBMITTED; IN_PROGRESS keeps its 4 h
}


def accelerated_rules(text: str) -> str:
    """The shipped rules with test-sized `for:` durations and thresholds (see THRESHOLDS)."""
    rules: dict[str, Any] = yaml.safe_load(text)
    replaced: set[str] = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = FOR
            name = rule.get("alert")
            if name in THRESHOLDS:
                old, new = THRESHOLDS[name]
                assert old in rule["expr"], f"{name} no longer has {old!r}; update THRESHOLDS"
                rule["expr"] = rule["expr"].replace(old, new)
                replaced.add(name)
    assert replaced == set(THRESHOLDS), f"rules not found: {set(THRESHOLDS) - replaced}"
    return yaml.safe_dump(rules, sort_keys=False)


@dataclass
class Stack:
    """Every piece of the pipeline, started in order and stopped in reverse."""

    emulator: EmulatorServer
    exporter: ExporterProcess
    hook: WebhookReceiver
    alertmanager: AlertmanagerServer
    prometheus: PrometheusServer

    def data_store_alert(
        self, name: str, datastore_id: str, status: str = "firing", timeout: float = 60.0
    ) -> dict[str, Any]:
        """Wait for alert `name` about a data store; one firing must link its runbook section."""
        alert = self.hook.wait_for_alert(
            {"alertname": name, "datastore_id": datastore_id}, status=status, timeout=timeout
        )
        if status == "firing":
            assert alert["annotations"]["runbook_url"].endswith(f"#{name.lower()}")
        return alert

    def stop(self) -> None:
        """Stop everything that still runs."""
        self.prometheus.stop()
        self.alertmanager.stop()
        self.hook.stop()
        self.exporter.stop()
        self.emulator.stop()


def start_stack(
    exporter_config: Callable[[EmulatorServer], dict[str, Any]], ready_query: str
) -> Stack:
    """Start the whole pipeline with the shipped rules; return once `ready_query` finds something.

    Emulator (demo data), exporter, webhook, Alertmanager (the shipped config), Prometheus.
    """
    emulator = EmulatorServer(port=0, dataset="demo").start()
    started: list[Any] = [emulator]
    try:
        exporter = ExporterProcess(exporter_config(emulator))
        exporter.start()
        started.append(exporter)
        hook = WebhookReceiver()
        hook.start()
        started.append(hook)
        alertmanager = AlertmanagerServer(
            shipped_alertmanager_config(ALERTMANAGER, hook.url.rsplit("/", 1)[0])
        )
        alertmanager.start()
        started.append(alertmanager)
        prometheus = PrometheusServer(
            prometheus_config(
                rule_files=["rules.yml"],
                alertmanagers=[alertmanager.address],
                scrape_targets={JOB: [exporter.address]},
            ),
            files={"rules.yml": accelerated_rules(RULES.read_text())},
        )
        prometheus.start()
        started.append(prometheus)
        prometheus.wait_for_query(ready_query)
    except BaseException:
        for part in reversed(started):
            part.stop()
        raise
    return Stack(emulator, exporter, hook, alertmanager, prometheus)


@pytest.fixture
def stack() -> Iterator[Stack]:
    """Emulator (demo data), exporter polling every second, Prometheus, Alertmanager, webhook."""
    running = start_stack(
        lambda emulator: {
            "aws": {"region": "us-east-1", "endpoint_url": emulator.url},
            "poll": {"interval_seconds": 1},
            "datastores": [{"datastore_id": DATASTORE, "image_sets": [IMAGE_SET]}],
        },
        # The exporter's baseline is in and Prometheus has seen the data store up.
        f'healthimaging_up{{datastore_id="{DATASTORE}"}} == 1',
    )
    try:
        yield running
    finally:
        running.stop()


def add_failures(stack: Stack) -> None:
    """A COPY_FAILED version and a forced update of the demo image set."""
    stack.emulator.backend.add_version(DATASTORE, IMAGE_SET, "COPY_FAILED")
    stack.emulator.backend.add_version(DATASTORE, IMAGE_SET, "UPDATED", forced=True)


def test_copy_failed_and_forced_override_reach_the_webhook(stack: Stack) -> None:
    """The first COPY_FAILED and the first forced version of an image set page, with its ids."""
    assert stack.hook.alerts() == []
    add_failures(stack)
    copy_failed = stack.hook.wait_for_alert({"alertname": "HealthImagingCopyFailed"}, timeout=30)
    assert copy_failed["labels"] == {
        "alertname": "HealthImagingCopyFailed",
        "severity": "critical",
        "datastore_id": DATASTORE,
        "image_set_id": IMAGE_SET,
        "workflow_status": "COPY_FAILED",
    }
    assert copy_failed["annotations"]["runbook_url"].endswith("#healthimagingcopyfailed")
    assert IMAGE_SET in copy_failed["annotations"]["summary"]
    forced = stack.hook.wait_for_alert({"alertname": "HealthImagingForcedOverride"}, timeout=30)
    assert forced["labels"] == {
        "alertname": "HealthImagingForcedOverride",
        "severity": "warning",
        "datastore_id": DATASTORE,
        "image_set_id": IMAGE_SET,
    }

    # Critical alerts reach the paging receiver and the team receiver, warnings only the team's.
    def routed() -> set[tuple[str, str]]:
        return {
            (alert["labels"]["alertname"], payload["receiver"])
            for payload in stack.hook.payloads
            for alert in payload["alerts"]
        }

    both = {
        ("HealthImagingCopyFailed", "healthimaging-page"),
        ("HealthImagingCopyFailed", "healthimaging-default"),
        ("HealthImagingForcedOverride", "healthimaging-default"),
    }
    wait_until(lambda: both <= routed(), timeout=15, what="alerts at their receivers")
    assert ("HealthImagingForcedOverride", "healthimaging-page") not in routed()
    # Nothing else fires in this healthy pipeline.
    names = {alert["labels"]["alertname"] for alert in stack.hook.alerts()}
    assert names == {"HealthImagingCopyFailed", "HealthImagingForcedOverride"}


def test_outages_raise_unreachable_stale_and_down(stack: Stack) -> None:
    """A stopped emulator: unreachable and stale data store; a stopped exporter: down."""
    stack.emulator.stop()
    unreachable = stack.hook.wait_for_alert(
        {"alertname": "HealthImagingDatastoreUnreachable", "datastore_id": DATASTORE}, timeout=40
    )
    assert unreachable["labels"]["severity"] == "critical"
    assert re.search(
        r"reasons in the last 15 minutes: \w+", unreachable["annotations"]["description"]
    )
    # PollStale fires in Prometheus; Alertmanager inhibits it while the data store is unreachable.
    stale = stack.prometheus.wait_for_query(
        'ALERTS{alertname="HealthImagingPollStale",alertstate="firing"}', timeout=30
    )
    assert stale[0]["metric"]["datastore_id"] == DATASTORE
    assert "HealthImagingPollStale" not in {a["labels"]["alertname"] for a in stack.hook.alerts()}

    stack.exporter.stop()
    down = stack.hook.wait_for_alert(
        {"alertname": "HealthImagingExporterDown", "datastore_id": DATASTORE}, timeout=40
    )
    assert down["labels"]["job"] == JOB
    assert down["labels"]["instance"] == stack.exporter.address
    assert down["labels"]["severity"] == "critical"


def test_every_dashboard_query_runs(stack: Stack) -> None:
    """Every panel query runs without error, and returns data wherever its metrics exist."""
    add_failures(stack)
    # A copy in progress, for the panels of in-progress workflows.
    stack.emulator.backend.add_version(DATASTORE, IMAGE_SET, "COPYING")
    stack.prometheus.wait_for_query("healthimaging_forced_versions_total")
    stack.prometheus.wait_for_query("healthimaging_image_set_in_progress_since_timestamp_seconds")
    # Let the rate windows fill with a few scrapes after the event.
    stack.prometheus.wait_for_query(
        "count_over_time(healthimaging_forced_versions_total[10s]) >= 5"
    )
    families = documented_metrics()
    variables = {
        "datastore_id": DATASTORE,
        "__rate_interval": "10s",
        "__interval": "1s",
        "__range": "5m",
        "__range_s": "300",
    }
    empty: list[str] = []
    absent: list[str] = []
    ran = 0
    for title, expr in panel_queries(variables=variables):
        result = stack.prometheus.query(expr)
        ran += 1
        if result:
            continue
        present = all(
            stack.prometheus.query(f"count({{__name__=~'{name}'}})")
            for name in metric_names(expr)
            if family_of(name, families)
        )
        if present:
            empty.append(f"{title}: {expr}")
        else:
            absent.append(title)
    assert ran >= 25
    # The scenario has no backfill, no poll errors and no budget waits; all else must show data.
    allowed = {
        "Backfills complete [A]",
        "Backfills complete [B]",
        "Backfill progress [A]",
        "Backfill progress [B]",
        "Poll errors by reason [A]",
        "Throttling [B]",
        # No failed import job, no active one, no manifests read (import_jobs.read_manifests).
        "Import jobs ended, failures and failed files [B]",
        "Import jobs ended, failures and failed files [C]",
        "Oldest active import job [A]",
    }
    assert set(absent) <= allowed, f"panels without their metrics: {set(absent) - allowed}"
    assert not empty, "panels without data although their metrics exist:\n" + "\n".join(empty)
