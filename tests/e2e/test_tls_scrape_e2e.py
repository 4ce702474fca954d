"""Prometheus scrapes the exporter over TLS with basic auth; alerts flow; no secret is logged."""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import bcrypt
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
from tests.e2e.test_alerting_e2e import ALERTMANAGER, RULES, accelerated_rules
from tests.helpers import DEMO_DATASTORE, DEMO_IMAGE_SET
from tests.pki import issue, make_ca

pytestmark = pytest.mark.e2e

DATASTORE = DEMO_DATASTORE
IMAGE_SET = DEMO_IMAGE_SET
JOB = "healthimaging-exporter-tls"
USER = "prometheus"


@dataclass
class TLSStack:
    """The pipeline with a TLS and basic-auth protected exporter, and the secrets it uses."""

    emulator: EmulatorServer
    exporter: ExporterProcess
    hook: WebhookReceiver
    prometheus: PrometheusServer
    ca_file: Path
    password: str
    password_hash: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSStack]:
    """Emulator, exporter behind a web config, Prometheus over https with basic auth, alerting."""
    pki = tmp_path_factory.mktemp("tls-e2e")
    make_ca(pki, "ca")
    issue(
        pki, "ca", "server", "127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"
    )
    password = secrets.token_urlsafe(24)
    password_hash = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    web_config = pki / "web.yml"
    web_config.write_text(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
        f"basic_auth_users:\n  {USER}: '{password_hash}'\n"
    )
    client = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with ExitStack() as cleanup:
        emulator = EmulatorServer(port=0, dataset="demo").start()
        cleanup.callback(emulator.stop)
        exporter = ExporterProcess(
            {
                "aws": {"region": "us-east-1", "endpoint_url": emulator.url},
                "poll": {"interval_seconds": 1},
                "datastores": [{"datastore_id": DATASTORE, "image_sets": [IMAGE_SET]}],
                "web": {"config_file": str(web_config)},
            },
            args=["--log.level", "debug", "--log.format", "json"],
            ssl_context=client,
            auth=(USER, password),
        )
        cleanup.callback(exporter.stop)
        exporter.start()
        hook = WebhookReceiver()
        cleanup.callback(hook.stop)
        hook.start()
        alertmanager = AlertmanagerServer(
            shipped_alertmanager_config(ALERTMANAGER, hook.url.rsplit("/", 1)[0])
        )
        cleanup.callback(alertmanager.stop)
        alertmanager.start()
        config = prometheus_config(
            rule_files=["rules.yml"],
            alertmanagers=[alertmanager.address],
            scrape_targets={JOB: [exporter.address]},
        )
        config["scrape_configs"][0].update(
            scheme="https",
            tls_config={"ca_file": "ca.pem"},
            basic_auth={"username": USER, "password_file": "password"},
        )
        prometheus = PrometheusServer(
            config,
            files={
                "rules.yml": accelerated_rules(RULES.read_text()),
                "ca.pem": (pki / "ca.pem").read_text(),
                "password": password,
            },
        )
        cleanup.callback(prometheus.stop)
        prometheus.start()
        prometheus.wait_for_query(f'up{{job="{JOB}"}} == 1')
        prometheus.wait_for_query(f'healthimaging_up{{datastore_id="{DATASTORE}"}} == 1')
        yield TLSStack(
            emulator, exporter, hook, prometheus, pki / "ca.pem", password, password_hash
        )


def get_status(url: str, context: ssl.SSLContext, authorization: str | None = None) -> int:
    """GET url over HTTPS; return the status, also for HTTP errors."""
    request = urllib.request.Request(url)
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code


def basic(user: str, password: str) -> str:
    """A Basic Authorization header value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_prometheus_scrapes_over_tls_and_the_copy_failed_alert_arrives(stack: TLSStack) -> None:
    """Prometheus's https target is up and a COPY_FAILED version pages with its ids."""
    targets = stack.prometheus.api("targets")["activeTargets"]
    ours = [t for t in targets if t["labels"]["job"] == JOB]
    assert len(ours) == 1
    assert ours[0]["scrapeUrl"] == f"https://{stack.exporter.address}/metrics"
    assert ours[0]["health"] == "up", ours[0].get("lastError")
    up = stack.prometheus.query(f'up{{job="{JOB}"}}')
    assert [sample["value"][1] for sample in up] == ["1"]

    stack.emulator.backend.add_version(DATASTORE, IMAGE_SET, "COPY_FAILED")
    alert = stack.hook.wait_for_alert({"alertname": "HealthImagingCopyFailed"}, timeout=30)
    assert alert["labels"] == {
        "alertname": "HealthImagingCopyFailed",
        "severity": "critical",
        "datastore_id": DATASTORE,
        "image_set_id": IMAGE_SET,
        "workflow_status": "COPY_FAILED",
    }


def test_plain_http_and_missing_credentials_are_refused(stack: TLSStack) -> None:
    """Plain HTTP to the TLS port gets no response; HTTPS without credentials gets 401."""
    host, port = stack.exporter.address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        with pytest.raises((http.client.HTTPException, OSError)):
            connection.request("GET", "/metrics")
            response = connection.getresponse()
            pytest.fail(f"plain HTTP to the TLS port got a response: {response.status}")
    finally:
        connection.close()

    context = ssl.create_default_context(cafile=str(stack.ca_file))
    metrics = f"{stack.exporter.url}/metrics"
    assert metrics.startswith("https://")
    assert get_status(metrics, context) == 401
    assert get_status(metrics, context, basic(USER, "wrong-" + secrets.token_hex(8))) == 401
    assert get_status(metrics, context, basic(USER, stack.password)) == 200


def test_credentials_never_appear_in_the_exporter_logs(stack: TLSStack) -> None:
    """The debug JSON logs hold neither the password, its hash, nor any Authorization header."""
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    wrong = "wrong-" + secrets.token_hex(8)
    url = f"{stack.exporter.url}/metrics"
    assert get_status(url, context, basic(USER, wrong)) == 401
    assert get_status(url, context, "Bearer " + wrong) == 401

    # A few more authenticated scrapes by Prometheus after those refusals, then the logs.
    def last_scrape() -> float:
        return float(stack.prometheus.query(f'timestamp(up{{job="{JOB}"}})')[0]["value"][1])

    scraped = last_scrape()
    wait_until(lambda: last_scrape() >= scraped + 2, timeout=10, what="two more scrapes")
    log = stack.exporter.log()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(record["level"] == "debug" for record in records), log[-2000:]
    secrets_seen = {
        "password": stack.password,
        "bcrypt hash": stack.password_hash,
        "bcrypt hash body": stack.password_hash[7:],
        "basic token": basic(USER, stack.password).split()[1],
        "wrong password": wrong,
        "Authorization": "authorization",
    }
    leaked = [name for name, secret in secrets_seen.items() if secret.lower() in log.lower()]
    assert not leaked, f"the exporter logged: {leaked}"
    assert stack.password not in stack.prometheus.log()
