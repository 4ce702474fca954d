"""Real Prometheus and Alertmanager processes and a webhook receiver for end-to-end tests."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import pytest
import yaml

from tests.helpers import free_port

PROMETHEUS_NAMES = ("prometheus",)
PROMTOOL_NAMES = ("promtool",)
# Debian names the Alertmanager binary prometheus-alertmanager; upstream releases alertmanager.
ALERTMANAGER_NAMES = ("prometheus-alertmanager", "alertmanager")
AMTOOL_NAMES = ("amtool",)

INSTALL_HINT = (
    "install the Debian packages prometheus and prometheus-alertmanager "
    "(scripts/install-test-tools does, as root)"
)


def in_ci() -> bool:
    """True when the CI environment variable says the tests run in CI."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def find_binary(*names: str) -> str:
    """Return the path of the first of names on PATH; fail the test in CI, skip it elsewhere."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    message = f"none of {', '.join(names)} is on PATH; {INSTALL_HINT}"
    if in_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


def http_get_json(url: str, timeout: float = 5.0) -> Any:
    """GET url and decode its JSON body, also for HTTP error responses that carry JSON."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read()
        try:
            return json.loads(body)
        except ValueError:
            raise error from None


T = TypeVar("T")


def wait_until(
    probe: Callable[[], T | None], timeout: float, interval: float = 0.2, what: str = "condition"
) -> T:
    """Call probe until it returns something other than None or False; raise on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
        except (OSError, ValueError) as error:
            last_error = error
            result = None
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise TimeoutError(f"{what} not reached within {timeout} s{detail}")
        time.sleep(interval)


class QueryError(RuntimeError):
    """A PromQL query the Prometheus HTTP API rejected."""


class _ServerProcess:
    """A server binary in its own temporary directory, started and stopped by the test."""

    name = "server"
    binary_names: tuple[str, ...] = ()

    def __init__(
        self,
        config: Mapping[str, Any],
        files: Mapping[str, str] | None = None,
        binary: str | None = None,
    ) -> None:
        """Write the config and extra files (name -> text) into its directory; nothing runs yet."""
        self.binary = binary or find_binary(*self.binary_names)
        files = files or {}
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"hie-{self.name}-"))
        self.config_path = self.dir / "config.yml"
        self.config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
        for relative, content in files.items():
            path = self.dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        self.log_path = self.dir / "server.log"
        self._final_log: str | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """host:port the server listens on."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://{self.address}"

    def argv(self) -> list[str]:
        """The command line; subclasses add their flags."""
        raise NotImplementedError

    def log(self) -> str:
        """The server's combined stdout and stderr so far, kept after stop() removes the dir."""
        if self._final_log is not None:
            return self._final_log
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until /-/ready answers 200."""
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.argv(), cwd=self.dir, stdout=log, stderr=subprocess.STDOUT
            )
        process = self._process

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {process.returncode}:\n{self.log()[-4000:]}"
                )
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)

        try:
            wait_until(ready, timeout, what=f"{self.name} ready on {self.address}")
        except TimeoutError as error:
            self.stop()
            raise TimeoutError(f"{error}; log:\n{self.log()[-4000:]}") from None

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process, kill it if it does not exit in time, remove its directory."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if process is not None:
            self._final_log = self.log()
        shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        """Send sig (kill -9 by default) and wait for the exit; the directory and port stay."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def restart(self, gap: float = 0.0, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Stop with sig, stay down for gap seconds, start again on the same port and data."""
        self.kill(sig)
        time.sleep(gap)
        self.start(timeout)

    @property
    def running(self) -> bool:
        """True while the process runs."""
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> Self:
        """Start the server."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()


class PrometheusServer(_ServerProcess):
    """A real Prometheus on a free loopback port with its own TSDB directory."""

    name = "prometheus"
    binary_names = PROMETHEUS_NAMES

    def __init__(
        self,
        config: Mapping[str, Any],
        files: Mapping[str, str] | None = None,
        binary: str | None = None,
        *,
        resend_delay: str = "1s",
    ) -> None:
        """Like _ServerProcess; resend_delay is --rules.alert.resend-delay."""
        super().__init__(config, files, binary)
        # The first notification of a new alert is dropped when the Alertmanager discovery has
        # not synced yet; the default resend delay of 1m would then stall the test. Alertmanager
        # resolves an alert 4 x max(resend delay, evaluation interval) after it was last sent,
        # so a test that restarts Prometheus needs a resend delay longer than the restart.
        self.resend_delay = resend_delay

    def argv(self) -> list[str]:
        """Prometheus flags: config, TSDB path, loopback listen address."""
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address={self.address}",
            f"--rules.alert.resend-delay={self.resend_delay}",
            "--log.level=info",
        ]

    def set_file_sd_targets(self, job: str, targets: Sequence[str]) -> None:
        """Replace the targets of a job configured with file_sd_jobs (atomic rename)."""
        path = self.dir / file_sd_path(job)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps([{"targets": list(targets)}]))
        temporary.replace(path)

    def api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET an /api/v1 endpoint and return its data, raising QueryError on an error."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        body = http_get_json(f"{self.url}/api/v1/{path}{query}")
        if body.get("status") != "success":
            raise QueryError(f"{path} {dict(params or {})}: {body.get('error', body)}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[Any]:
        """Run an instant query; return the result (a list of series, or [time, value])."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        result: list[Any] = self.api("query", params)["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts Prometheus currently has pending or firing."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def wait_for_query(self, expr: str, timeout: float = 30.0) -> list[Any]:
        """Wait until an instant query returns a non-empty result and return it."""
        return wait_until(lambda: self.query(expr) or None, timeout, what=f"a result for {expr}")


class AlertmanagerServer(_ServerProcess):
    """A real Alertmanager on a free loopback port, gossip disabled, its own storage."""

    name = "alertmanager"
    binary_names = ALERTMANAGER_NAMES

    def argv(self) -> list[str]:
        """Alertmanager flags: config, storage, loopback listen address, no cluster."""
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.path={self.dir / 'data'}",
            f"--web.listen-address={self.address}",
            "--cluster.listen-address=",
            "--log.level=info",
        ]

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds (API v2)."""
        alerts: list[dict[str, Any]] = http_get_json(f"{self.url}/api/v2/alerts")
        return alerts


def file_sd_path(job: str) -> str:
    """The file_sd file of a job, relative to the Prometheus directory."""
    return f"targets-{job}.json"


def prometheus_config(
    *,
    rule_files: Sequence[str] = (),
    alertmanagers: Sequence[str] = (),
    scrape_targets: Mapping[str, Sequence[str]] | None = None,
    file_sd_jobs: Sequence[str] = (),
    interval: str = "1s",
) -> dict[str, Any]:
    """A prometheus.yml mapping with short scrape and evaluation intervals for tests.

    Jobs in file_sd_jobs read their targets from a file that PrometheusServer.set_file_sd_targets
    rewrites while Prometheus runs (a rolling update changes the instance label).
    """
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": list(rule_files),
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(targets)}]}
            for job, targets in (scrape_targets or {}).items()
        ]
        + [
            {
                "job_name": job,
                "file_sd_configs": [{"files": [file_sd_path(job)], "refresh_interval": "1s"}],
            }
            for job in file_sd_jobs
        ],
    }
    if alertmanagers:
        config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]
        }
    return config


def alertmanager_config(webhook_url: str, group_by: Sequence[str] = ("...",)) -> dict[str, Any]:
    """An alertmanager.yml mapping sending everything to one webhook, with second-scale timers."""
    return {
        "route": {
            "receiver": "webhook",
            "group_by": list(group_by),
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {"name": "webhook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}
        ],
    }


def shipped_alertmanager_config(path: Path, webhook_base_url: str) -> dict[str, Any]:
    """A shipped Alertmanager config with second-scale timers; receiver N posts to base/N.

    group_wait and group_interval become 1 s, so a resolve and a re-page show up within seconds;
    repeat_interval becomes 1 h everywhere, so a repeat cannot be mistaken for a re-page.
    """
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    for route in config["route"].get("routes", []):
        route.pop("repeat_interval", None)
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = f"{webhook_base_url}/{receiver['name']}"
    return config


class WebhookReceiver:
    """Records Alertmanager webhook payloads posted to a loopback HTTP server in a thread."""

    def __init__(self) -> None:
        """Bind to a free loopback port; call start() or use it as a context manager."""
        self._payloads: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                try:
                    payload = json.loads(body)
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver._changed:
                    receiver._payloads.append(payload)
                    receiver._changed.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The URL to put in an Alertmanager webhook_config."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/alerts"

    @property
    def payloads(self) -> list[dict[str, Any]]:
        """A copy of every payload received so far."""
        with self._changed:
            return list(self._payloads)

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert of every payload received so far, in arrival order."""
        return [alert for payload in self.payloads for alert in payload.get("alerts", [])]

    def wait_for_alert(
        self, labels: Mapping[str, str], status: str = "firing", timeout: float = 30.0
    ) -> dict[str, Any]:
        """Wait for an alert whose labels include labels and whose status is status."""
        deadline = time.monotonic() + timeout

        def match() -> dict[str, Any] | None:
            for payload in self._payloads:
                for alert in payload.get("alerts", []):
                    got = alert.get("labels", {})
                    if alert.get("status") == status and all(
                        got.get(k) == v for k, v in labels.items()
                    ):
                        return dict(alert)
            return None

        with self._changed:
            while (found := match()) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(a.get("status"), a.get("labels")) for a in self._alerts_locked()]
                    raise AssertionError(
                        f"no {status} alert with labels {dict(labels)} within {timeout} s; "
                        f"received: {seen}"
                    )
                self._changed.wait(remaining)
            return found

    def _alerts_locked(self) -> list[dict[str, Any]]:
        """Every alert received so far; the caller holds the lock."""
        return [alert for payload in self._payloads for alert in payload.get("alerts", [])]

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Shut the server down and join its thread."""
        with contextlib.suppress(Exception):
            self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> Self:
        """Start serving."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop serving."""
        self.stop()


def find_exporter() -> str:
    """The healthimaging-exporter console script of this interpreter's environment, or on PATH."""
    beside = Path(sys.executable).parent / "healthimaging-exporter"
    if beside.exists():
        return str(beside)
    return find_binary("healthimaging-exporter")


class ExporterProcess(_ServerProcess):
    """The real healthimaging-exporter as a subprocess with a config file and its own state."""

    name = "exporter"

    def __init__(
        self,
        config: Mapping[str, Any],
        binary: str | None = None,
        *,
        args: Sequence[str] = (),
        ssl_context: ssl.SSLContext | None = None,
        auth: tuple[str, str] | None = None,
        state_path: Path | None = None,
    ) -> None:
        """Config is the exporter's YAML mapping; web.listen_address and state.path are set here.

        state_path shares a state file with another exporter process (a rolling update: the new
        pod mounts the old one's volume); by default each process has its own.
        """
        super().__init__({}, {}, binary or find_exporter())
        # Extra command-line flags, and the TLS client context and basic-auth credentials the
        # test's own requests use when web.config_file protects the exporter.
        self.args = list(args)
        self.ssl_context = ssl_context
        self.auth = auth
        full = dict(config)
        full["web"] = {**dict(config.get("web", {})), "listen_address": self.address}
        self.state_path = state_path or self.dir / "state.db"
        full["state"] = {**dict(config.get("state", {})), "path": str(self.state_path)}
        self.config_path.write_text(yaml.safe_dump(full, sort_keys=False))

    @property
    def url(self) -> str:
        """Base URL of the exporter: https when the test was given a TLS client context."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.address}"

    def argv(self) -> list[str]:
        """Exporter command line."""
        return [self.binary, "--config", str(self.config_path), *self.args]

    def _get(self, path: str) -> bytes:
        """GET a path of the exporter with the test's TLS context and credentials, if any."""
        request = urllib.request.Request(f"{self.url}{path}")
        if self.auth is not None:
            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=5, context=self.ssl_context) as response:
            body: bytes = response.read()
            return body

    def start(self, timeout: float = 30.0) -> None:
        """Start with dummy AWS credentials and wait until /metrics answers."""
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.argv(), cwd=self.dir, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        process = self._process

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"exporter exited with {process.returncode}:\n{self.log()}")
            self._get("/metrics")
            return True

        try:
            wait_until(ready, timeout, what=f"exporter /metrics on {self.address}")
        except TimeoutError as error:
            self.stop()
            raise TimeoutError(f"{error}; log:\n{self.log()[-4000:]}") from None

    def metrics(self) -> str:
        """The current /metrics page."""
        return self._get("/metrics").decode()
