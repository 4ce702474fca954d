"""A watched data store being deleted, for real: emulator -> exporter -> Prometheus -> Alertmanager.

The exporter reads the data store's status every second here (discovery.datastore_status_seconds);
the emulator's admin control moves the data store to DELETING and back to ACTIVE.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from tests.e2e.test_alerting_e2e import RULES, Stack, start_stack
from tests.helpers import DEMO_DATASTORE, DEMO_IMAGE_SET

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack() -> Iterator[Stack]:
    """The pipeline of test_alerting_e2e, with the data store's status read every second."""
    running = start_stack(
        lambda emulator: {
            "aws": {"region": "us-east-1", "endpoint_url": emulator.url},
            "poll": {"interval_seconds": 1},
            "discovery": {"datastore_status_seconds": 1},
            "datastores": [{"datastore_id": DEMO_DATASTORE, "image_sets": [DEMO_IMAGE_SET]}],
        },
        f'healthimaging_datastore_status{{datastore_id="{DEMO_DATASTORE}",'
        'datastore_status="ACTIVE"} == 1',
    )
    try:
        yield running
    finally:
        running.stop()


def rule_expr(name: str) -> str:
    """The expression of a shipped alert rule."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    (expr,) = [r["expr"] for g in groups for r in g["rules"] if r.get("alert") == name]
    assert isinstance(expr, str)
    return expr


def test_a_data_store_being_deleted_pages_and_is_not_reported_unreachable(stack: Stack) -> None:
    stack.emulator.backend.set_datastore_status(DEMO_DATASTORE, "DELETING")
    deleting = stack.data_store_alert("HealthImagingDatastoreDeleting", DEMO_DATASTORE, timeout=40)
    assert deleting["labels"] == {
        "alertname": "HealthImagingDatastoreDeleting",
        "severity": "critical",
        "datastore_id": DEMO_DATASTORE,
        "datastore_status": "DELETING",
    }
    # The data store is down, with its reason, and yet not "unreachable": the rule's own
    # expression, in the same Prometheus, finds nothing while healthimaging_up is 0.
    down = f'healthimaging_up{{datastore_id="{DEMO_DATASTORE}"}} == 0'
    stack.prometheus.wait_for_query(down)
    stack.prometheus.wait_for_query(
        "healthimaging_exporter_poll_errors_total"
        f'{{datastore_id="{DEMO_DATASTORE}",reason="datastore_not_active"}} > 0'
    )
    assert stack.prometheus.query(rule_expr("HealthImagingDatastoreUnreachable")) == []
    assert stack.prometheus.query(down)  # still down at that evaluation
    # Undone (ACTIVE again): the alert resolves and the data store is polled again.
    stack.emulator.backend.set_datastore_status(DEMO_DATASTORE, "ACTIVE")
    stack.data_store_alert("HealthImagingDatastoreDeleting", DEMO_DATASTORE, "resolved")
    stack.prometheus.wait_for_query(f'healthimaging_up{{datastore_id="{DEMO_DATASTORE}"}} == 1')
    fired = {a["labels"]["alertname"] for a in stack.hook.alerts()}
    assert "HealthImagingDatastoreUnreachable" not in fired


def test_a_data_store_that_failed_to_be_created_warns_and_resolves_when_active(
    stack: Stack,
) -> None:
    stack.emulator.backend.set_datastore_status(DEMO_DATASTORE, "CREATE_FAILED")
    not_active = stack.data_store_alert(
        "HealthImagingDatastoreNotActive", DEMO_DATASTORE, timeout=40
    )
    assert not_active["labels"] == {
        "alertname": "HealthImagingDatastoreNotActive",
        "severity": "warning",
        "datastore_id": DEMO_DATASTORE,
        "datastore_status": "CREATE_FAILED",
    }
    stack.prometheus.wait_for_query(f'healthimaging_up{{datastore_id="{DEMO_DATASTORE}"}} == 0')
    assert stack.prometheus.query(rule_expr("HealthImagingDatastoreUnreachable")) == []
    stack.emulator.backend.set_datastore_status(DEMO_DATASTORE, "ACTIVE")
    stack.data_store_alert("HealthImagingDatastoreNotActive", DEMO_DATASTORE, "resolved")
    fired = {a["labels"]["alertname"] for a in stack.hook.alerts()}
    assert not fired & {"HealthImagingDatastoreUnreachable", "HealthImagingDatastoreDeleting"}
