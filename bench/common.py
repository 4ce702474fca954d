"""What every scenario shares: the Figure record, percentiles, an HTTP scraper, the emulator."""

from __future__ import annotations

import contextlib
import http.client
import math
import os
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from bench import fleet
from exporter.emulator import EmulatorServer, Faults

# What Prometheus sends on a scrape: OpenMetrics preferred, gzip accepted.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0;q=0.5,"
    "text/plain;version=0.0.4;q=0.4,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}
PLAIN_HEADERS = {"Accept": "text/plain", "Accept-Encoding": "identity"}
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure beside its baseline from the same run."""

    name: str
    value: float
    unit: str
    baseline: float | None
    baseline_description: str
    target: str
    target_met: bool | None


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile (fraction in 0..1) of the samples."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def median(samples: Sequence[float]) -> float:
    """Return the median of the samples."""
    return float(statistics.median(samples))


def use_fake_credentials() -> None:
    """Give boto3 in this process fake credentials and no instance metadata lookups."""
    for name, value in AWS_ENV.items():
        os.environ.setdefault(name, value)


def child_env() -> dict[str, str]:
    """Return the environment for an exporter child process."""
    return {**os.environ, **AWS_ENV}


class Scraper:
    """GETs paths over one keep-alive connection, reconnecting when the server closes it."""

    def __init__(self, url: str, timeout: float = 120.0) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def get(self, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        """Return the status and the whole (still encoded) body."""
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            self._conn.request("GET", path, headers=headers)
            response = self._conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, body

    def timed(self, path: str, headers: dict[str, str]) -> tuple[float, bytes]:
        """Return the seconds from sending the request to the last body byte, and the body."""
        start = time.perf_counter()
        status, body = self.get(path, headers)
        elapsed = time.perf_counter() - start
        if status != 200:
            raise RuntimeError(f"GET {path}: status {status}")
        return elapsed, body

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@contextlib.contextmanager
def denied_emulator() -> Iterator[EmulatorServer]:
    """An emulator that denies the bench data store, so a poll ends after one call."""
    with EmulatorServer(port=0, dataset=None) as server:
        server.backend.create_datastore(fleet.DATASTORE, name="bench")
        server.backend.set_faults(Faults(access_denied_datastores=frozenset({fleet.DATASTORE})))
        yield server


def mib(kib: float) -> float:
    """Convert KiB to MiB."""
    return kib / 1024.0
