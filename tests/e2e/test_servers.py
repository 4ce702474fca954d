"""The end-to-end helpers start real Prometheus and Alertmanager and deliver an alert."""

from __future__ import annotations

import urllib.request

import pytest

from tests.e2e.servers import (
    AlertmanagerServer,
    PrometheusServer,
    QueryError,
    WebhookReceiver,
    alertmanager_config,
    find_binary,
    prometheus_config,
)

pytestmark = pytest.mark.e2e

ALWAYS_FIRING = """\
groups:
  - name: test
    rules:
      - alert: AlwaysFiring
        expr: vector(1)
        labels:
          severity: test
          datastore_id: "12345678901234567890123456789012"
        annotations:
          summary: always firing
"""


def test_find_binary_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """In CI a missing binary fails the test instead of skipping it."""
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and none of no-such-binary-hie"):
        find_binary("no-such-binary-hie")


def test_find_binary_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside CI a missing binary skips with the reason."""
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-such-binary-hie is on PATH"):
        find_binary("no-such-binary-hie")


def test_webhook_receiver_records_posts() -> None:
    """A posted payload is recorded and found by wait_for_alert."""
    payload = b'{"alerts": [{"status": "firing", "labels": {"alertname": "X", "a": "1"}}]}'
    with WebhookReceiver() as hook:
        request = urllib.request.Request(hook.url, data=payload, method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        alert = hook.wait_for_alert({"alertname": "X"}, timeout=5)
        assert alert["labels"] == {"alertname": "X", "a": "1"}
        with pytest.raises(AssertionError, match="no firing alert with labels"):
            hook.wait_for_alert({"alertname": "Y"}, timeout=0.5)


def test_alert_reaches_webhook_through_alertmanager() -> None:
    """An always-firing rule in Prometheus reaches the webhook via Alertmanager."""
    with (
        WebhookReceiver() as hook,
        AlertmanagerServer(alertmanager_config(hook.url)) as alertmanager,
        PrometheusServer(
            prometheus_config(
                rule_files=["always.yml"],
                alertmanagers=[alertmanager.address],
                scrape_targets={"prometheus": []},
            ),
            files={"always.yml": ALWAYS_FIRING},
        ) as prometheus,
    ):
        assert prometheus.running and alertmanager.running
        assert prometheus.query("vector(42)")[0]["value"][1] == "42"
        with pytest.raises(QueryError, match="parse error"):
            prometheus.query("sum(")
        alert = hook.wait_for_alert({"alertname": "AlwaysFiring"}, timeout=30)
        assert alert["labels"] == {
            "alertname": "AlwaysFiring",
            "severity": "test",
            "datastore_id": "12345678901234567890123456789012",
        }
        assert alert["annotations"] == {"summary": "always firing"}
        assert [a["labels"]["alertname"] for a in alertmanager.alerts()] == ["AlwaysFiring"]
        firing = prometheus.wait_for_query('ALERTS{alertname="AlwaysFiring",alertstate="firing"}')
        assert firing[0]["metric"]["severity"] == "test"
    assert not prometheus.running and not alertmanager.running
    assert not prometheus.dir.exists() and not alertmanager.dir.exists()
