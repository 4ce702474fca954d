"""The daemon over real HTTP: negotiation, gzip, health, readiness, reload, bad requests."""

from __future__ import annotations

import gzip
import re
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from prometheus_client.openmetrics import parser as openmetrics_parser

from exporter.config import load_config
from exporter.daemon import Daemon
from exporter.emulator import EmulatorServer
from tests.helpers import DEMO_DATASTORE, DEMO_IMAGE_SET, fetch, wait_for
from tests.integration.conftest import ConfigFactory

DaemonFactory = Callable[..., Daemon]


def metrics_text(daemon: Daemon) -> str:
    return fetch(daemon.url + "/metrics")[2].decode()


def test_serves_text_openmetrics_and_gzip(
    make_config: ConfigFactory, daemon_for: DaemonFactory
) -> None:
    daemon = daemon_for(make_config())
    wait_for(lambda: fetch(daemon.url + "/-/ready")[0] == 200)
    status, headers, body = fetch(daemon.url + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"healthimaging_image_set_versions{" in body
    assert b"# HELP healthimaging_up " in body
    # What Prometheus sends: OpenMetrics preferred.
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    status, headers, om = fetch(daemon.url + "/metrics", {"Accept": accept})
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert om.rstrip().endswith(b"# EOF")
    assert b"# TYPE healthimaging_failed_versions counter" in om
    # The strict OpenMetrics parser accepts every family, ours and prometheus_client's alike.
    parsed = openmetrics_parser.text_string_to_metric_families(om.decode())  # type: ignore[no-untyped-call]
    families = {f.name: f for f in parsed}
    assert families["healthimaging_image_set_versions"].type == "gauge"
    assert families["healthimaging_exporter_api_requests"].type == "counter"
    status, headers, zipped = fetch(daemon.url + "/metrics", {"Accept-Encoding": "gzip"})
    assert headers.get("Content-Encoding") == "gzip"
    assert gzip.decompress(zipped).startswith(b"# HELP")


def test_health_ready_landing_and_errors(
    make_config: ConfigFactory, daemon_for: DaemonFactory
) -> None:
    daemon = daemon_for(make_config())
    assert fetch(daemon.url + "/-/healthy")[0] == 200
    wait_for(lambda: fetch(daemon.url + "/-/ready")[0] == 200)
    status, _, body = fetch(daemon.url + "/")
    assert status == 200 and b'href="metrics"' in body
    assert fetch(daemon.url + "/nope")[0] == 404
    assert fetch(daemon.url + "/-/reload", method="POST")[0] == 403  # lifecycle API off
    assert fetch(daemon.url + "/metrics", method="DELETE")[0] == 501
    # A malformed request line gets a plain one-line answer, not a traceback.
    host, port = daemon.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GARBAGE\x00 / HTTP/9.9\r\n\r\n")
        answer = sock.recv(4096)
    assert re.match(rb"HTTP/1\.[01] [45]\d\d ", answer), answer
    assert b"Traceback" not in answer


def test_not_ready_before_the_first_poll(
    emulator: EmulatorServer, make_config: ConfigFactory, daemon_for: DaemonFactory
) -> None:
    emulator.backend.set_faults(emulator.backend.faults.__class__(latency_seconds=1.5))
    daemon = daemon_for(make_config(poll={"timeout_seconds": 30}))
    assert fetch(daemon.url + "/-/ready")[0] == 503
    assert fetch(daemon.url + "/-/healthy")[0] == 200
    wait_for(lambda: fetch(daemon.url + "/-/ready")[0] == 200)


def test_detects_a_new_failure_on_schedule(
    emulator: EmulatorServer, make_config: ConfigFactory, daemon_for: DaemonFactory
) -> None:
    daemon = daemon_for(make_config())
    wait_for(lambda: fetch(daemon.url + "/-/ready")[0] == 200)
    emulator.backend.add_version(DEMO_DATASTORE, DEMO_IMAGE_SET, "COPY_FAILED")
    series = (
        f'healthimaging_failed_versions_total{{datastore_id="{DEMO_DATASTORE}",'
        f'image_set_id="{DEMO_IMAGE_SET}",workflow_status="COPY_FAILED"}} 1.0'
    )
    wait_for(lambda: series in metrics_text(daemon))


def test_reload_keeps_old_config_when_new_is_invalid(
    emulator: EmulatorServer, make_config: ConfigFactory, daemon_for: DaemonFactory, tmp_path: Path
) -> None:
    config = make_config()
    path = tmp_path / "config.yaml"
    raw = {
        "aws": {"endpoint_url": emulator.url},
        "poll": {"interval_seconds": 1},
        "datastores": [{"datastore_id": DEMO_DATASTORE, "image_sets": [DEMO_IMAGE_SET]}],
        "state": {"path": config.state.path},
        "web": {"listen_address": "127.0.0.1:0"},
    }
    path.write_text(yaml.safe_dump(raw))
    daemon = daemon_for(config, reload_config=lambda: load_config(path), enable_lifecycle=True)
    wait_for(lambda: fetch(daemon.url + "/-/ready")[0] == 200)
    path.write_text("poll: {interval_seconds: -1}\n")
    status, _, body = fetch(daemon.url + "/-/reload", method="POST")
    assert status == 500 and b"interval_seconds" in body
    assert "healthimaging_exporter_config_last_reload_successful 0.0" in metrics_text(daemon)
    assert "healthimaging_image_set_versions{" in metrics_text(daemon)  # still serving
    other = emulator.backend.create_image_set(DEMO_DATASTORE)
    raw["datastores"] = [{"datastore_id": DEMO_DATASTORE, "image_sets": [DEMO_IMAGE_SET, other]}]
    path.write_text(yaml.safe_dump(raw))
    assert fetch(daemon.url + "/-/reload", method="POST")[0] == 200
    assert "healthimaging_exporter_config_last_reload_successful 1.0" in metrics_text(daemon)
    wait_for(lambda: f'image_set_id="{other}"' in metrics_text(daemon))


@pytest.mark.parametrize("per_image_set", ["failures_only", "none"])
def test_per_image_set_modes_keep_datastore_aggregates(
    emulator: EmulatorServer,
    make_config: ConfigFactory,
    daemon_for: DaemonFactory,
    per_image_set: str,
) -> None:
    healthy = emulator.backend.create_image_set(DEMO_DATASTORE)
    daemon = daemon_for(
        make_config([DEMO_IMAGE_SET, healthy], metrics={"per_image_set": per_image_set})
    )
    wait_for(lambda: fetch(daemon.url + "/-/ready")[0] == 200)
    text = metrics_text(daemon)
    assert f'image_set_id="{healthy}"' not in text
    assert (
        f'healthimaging_image_set_versions{{datastore_id="{DEMO_DATASTORE}",image_set_id="{DEMO_IMAGE_SET}"}}'
        in text
    ) == (per_image_set == "failures_only")
    assert f'healthimaging_datastore_image_sets{{datastore_id="{DEMO_DATASTORE}"}} 2.0' in text


def test_basic_auth_guards_metrics_but_not_probes_and_headers_are_sent(
    make_config: ConfigFactory, daemon_for: DaemonFactory, tmp_path: Path
) -> None:
    import base64

    import bcrypt

    web_config = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web_config.write_text(
        yaml.safe_dump(
            {
                "basic_auth_users": {"prometheus": hashed},
                "http_server_config": {"headers": {"X-Frame-Options": "deny"}},
            }
        )
    )
    daemon = daemon_for(make_config(web={"config_file": str(web_config)}))
    status, headers, _ = fetch(daemon.url + "/metrics")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    wrong = base64.b64encode(b"prometheus:nope").decode()
    assert fetch(daemon.url + "/metrics", {"Authorization": f"Basic {wrong}"})[0] == 401
    right = base64.b64encode(b"prometheus:s3cret").decode()
    wait_for(lambda: fetch(daemon.url + "/-/ready")[0] == 200)  # probes need no credentials
    status, headers, body = fetch(daemon.url + "/metrics", {"Authorization": f"Basic {right}"})
    assert status == 200 and b"healthimaging_up" in body
    assert headers["X-Frame-Options"] == "deny"
    assert fetch(daemon.url + "/-/healthy")[0] == 200


def test_plain_bodies_stream_over_http_1_0_and_head_sends_none(
    make_config: ConfigFactory, daemon_for: DaemonFactory
) -> None:
    daemon = daemon_for(make_config())
    wait_for(lambda: fetch(daemon.url + "/-/ready")[0] == 200)
    host, port = daemon.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):  # HTTP/1.0: the body ends with the connection
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    # A 1.1 status line is right (RFC 9110); what matters is no chunking for a 1.0 client.
    assert head.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding" not in head
    assert f"Content-Length: {len(body)}\r\n".encode() in head + b"\r\n"
    assert body.startswith(b"# HELP") and b"healthimaging_up{" in body
    status, _, body = fetch(daemon.url + "/metrics", method="HEAD")
    assert status == 200 and body == b""


def test_rate_limit_from_the_web_config_is_enforced(
    make_config: ConfigFactory, daemon_for: DaemonFactory, tmp_path: Path
) -> None:
    web_config = tmp_path / "web.yml"
    web_config.write_text("rate_limit:\n  interval: 1h\n  burst: 2\n")
    daemon = daemon_for(make_config(web={"config_file": str(web_config)}))
    assert [fetch(daemon.url + "/")[0] for _ in range(3)] == [200, 200, 429]
    status, headers, _ = fetch(daemon.url + "/metrics")
    assert status == 429 and int(headers["Retry-After"]) > 0
    assert fetch(daemon.url + "/-/healthy")[0] == 200  # probes are not limited
    status, headers, _ = fetch(daemon.url + "/")
    assert "Python" not in headers["Server"]


SELF_METRICS = (
    b"process_resident_memory_bytes ",
    b"process_cpu_seconds_total ",
    b"process_open_fds ",
    b"python_gc_objects_collected_total{",
    b"python_info{",
)


@pytest.mark.parametrize("disabled", [False, True])
def test_self_metrics_are_served_unless_disabled(
    make_config: ConfigFactory, daemon_for: DaemonFactory, disabled: bool
) -> None:
    daemon = daemon_for(make_config(web={"disable_exporter_metrics": disabled}))
    # Not /-/ready: the poller counts a cycle complete just before it publishes the rendering.
    wait_for(lambda: b"healthimaging_image_set_versions{" in fetch(daemon.url + "/metrics")[2])
    accept = {"Accept": "application/openmetrics-text;version=1.0.0"}
    for body in (
        fetch(daemon.url + "/metrics")[2],
        gzip.decompress(fetch(daemon.url + "/metrics", {"Accept-Encoding": "gzip"})[2]),
        fetch(daemon.url + "/metrics", accept)[2],
    ):
        assert b"healthimaging_image_set_versions{" in body
        for series in SELF_METRICS:
            assert (series in body) is not disabled, series
        assert (b"process_" in body or b"python_" in body) is not disabled
    om = fetch(daemon.url + "/metrics", accept)[2].decode()
    assert om.endswith("# EOF\n") and om.count("# EOF") == 1
    families = {f.name for f in openmetrics_parser.text_string_to_metric_families(om)}  # type: ignore[no-untyped-call]
    assert ("process_resident_memory_bytes" in families) is not disabled


def test_several_listen_addresses_serve_the_same_metrics_on_the_telemetry_path(
    make_config: ConfigFactory, daemon_for: DaemonFactory
) -> None:
    daemon = daemon_for(
        make_config(
            web={"listen_address": ["127.0.0.1:0", "127.0.0.1:0"], "telemetry_path": "/x/m"}
        )
    )
    assert len(daemon.urls) == 2 and daemon.urls[0] == daemon.url != daemon.urls[1]
    wait_for(lambda: b"healthimaging_up{" in fetch(daemon.url + "/x/m")[2])
    bodies = []
    for url in daemon.urls:
        status, _, body = fetch(url + "/x/m")
        assert status == 200
        bodies.append(
            [line for line in body.decode().splitlines() if line.startswith("healthimaging_up")]
        )
        assert fetch(url + "/metrics")[0] == 404
        assert fetch(url + "/x/m", method="POST")[0] == 405
        status, _, landing = fetch(url + "/")
        assert status == 200 and b'<a href="x/m">Metrics</a>' in landing
        assert b'href="metrics"' not in landing
    assert bodies[0] == bodies[1] and bodies[0]


def test_an_address_that_cannot_be_bound_is_named_and_nothing_stays_open(
    make_config: ConfigFactory,
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        config = make_config(web={"listen_address": ["127.0.0.1:0", f"127.0.0.1:{busy}"]})
        with pytest.raises(OSError, match=rf"^cannot listen on 127.0.0.1:{busy}: Address already"):
            Daemon(config)
