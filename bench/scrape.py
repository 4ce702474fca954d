"""Scenario 3: /metrics scrape latency with per-image-set series, vs a plain prometheus_client."""

from __future__ import annotations

import gzip
import time

from prometheus_client import CollectorRegistry, Gauge, start_http_server
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bench import fleet
from bench.common import (
    PLAIN_HEADERS,
    PROMETHEUS_HEADERS,
    Figure,
    Scraper,
    denied_emulator,
    median,
    percentile,
    use_fake_credentials,
)
from exporter.config import parse_config
from exporter.daemon import Daemon

TARGET_MS = 50.0
TARGET_SPEEDUP = 10.0


def _label(image_sets: int) -> str:
    return f"{image_sets // 1000}k" if image_sets >= 1000 else str(image_sets)


def plain_registry(text: bytes) -> CollectorRegistry:
    """Copy every sample of a text exposition into labeled Gauges of a fresh registry."""
    registry = CollectorRegistry(auto_describe=False)
    gauges: dict[str, Gauge] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            gauge = gauges.get(sample.name)
            if gauge is None:
                gauge = Gauge(
                    sample.name, family.documentation, list(sample.labels), registry=registry
                )
                gauges[sample.name] = gauge
            if sample.labels:
                gauge.labels(**sample.labels).set(sample.value)
            else:
                gauge.set(sample.value)
    return registry


def _series(body: bytes) -> int:
    text = gzip.decompress(body)
    return sum(1 for line in text.split(b"\n") if line and not line.startswith(b"#"))


def _scrapes(
    url: str, count: int, headers: dict[str, str], warm: bool = True
) -> tuple[list[float], bytes]:
    scraper = Scraper(url)
    try:
        samples = []
        body = b""
        if warm:
            scraper.timed("/metrics", headers)  # warm-up: connection, first build of the body
        else:
            scraper.get("/-/healthy", {})  # connect first: only the scrape is timed
            count = 1
        for _ in range(count):
            elapsed, body = scraper.timed("/metrics", headers)
            samples.append(elapsed)
        return samples, body
    finally:
        scraper.close()


def _wait_for_first_poll(daemon: Daemon, timeout: float = 600.0) -> None:
    service = daemon.service
    initial = service.cache.current()
    deadline = time.monotonic() + timeout
    while service.poller.completed_cycles < 1 or service.cache.current() is initial:
        if time.monotonic() > deadline:
            raise RuntimeError("the exporter's first poll did not finish")
        time.sleep(0.05)


def measure(image_sets: int, quick: bool) -> list[Figure]:
    """Time scrapes of the exporter and of a plain registry holding the same series."""
    size = _label(image_sets)
    state = fleet.state_file(image_sets, 5 * image_sets)
    exporter_scrapes = 20 if quick else 100
    baseline_scrapes = 3 if quick else (5 if image_sets >= 100_000 else 10)
    use_fake_credentials()
    with denied_emulator() as emulator:
        path = fleet.copy_state(state, f"scrape-{image_sets}.db")
        config = parse_config(fleet.config_dict(path, emulator.url), "bench config")
        daemon = Daemon(config).start()
        try:
            if not daemon.service.is_ready():
                raise RuntimeError("the exporter is not ready on its persisted state")
            # The first poll starts at once (denied after one call) and renders again; wait
            # for it, so the timed scrapes see the steady state between polls.
            _wait_for_first_poll(daemon)
            ours, our_body = _scrapes(daemon.url, exporter_scrapes, PROMETHEUS_HEADERS)
            ours_plain, _ = _scrapes(daemon.url, max(5, exporter_scrapes // 4), PLAIN_HEADERS)
            # A poll publishes a new exposition; its first scrape builds the body (lazily).
            renders, colds = [], []
            for _ in range(2 if quick else 3):
                start = time.perf_counter()
                daemon.service.poller.publish_view()
                renders.append(time.perf_counter() - start)
                colds.append(_scrapes(daemon.url, 0, PROMETHEUS_HEADERS, warm=False)[0][0])
            plain = plain_registry(daemon.service.exposition().text)
        finally:
            daemon.stop()
    generates = []
    for _ in range(1 if quick else 2):
        start = time.perf_counter()
        generate_latest(plain)
        generates.append(time.perf_counter() - start)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=plain)
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        theirs, their_body = _scrapes(url, baseline_scrapes, PROMETHEUS_HEADERS)
        theirs_plain, _ = _scrapes(url, baseline_scrapes, PLAIN_HEADERS)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    our_median, their_median = median(ours), median(theirs)
    speedup = their_median / our_median
    checked = image_sets >= 100_000
    baseline_what = "prometheus_client start_http_server, labeled Gauges, same series, same request"
    return [
        Figure(
            f"scrape_median_{size}",
            our_median * 1e3,
            "ms",
            their_median * 1e3,
            f"{baseline_what} (median of {len(theirs)})",
            f"<= {TARGET_MS:g} ms at 100k" if checked else "",
            our_median * 1e3 <= TARGET_MS if checked else None,
        ),
        Figure(
            f"scrape_p99_{size}",
            percentile(ours, 0.99) * 1e3,
            "ms",
            percentile(theirs, 0.99) * 1e3,
            f"{baseline_what} (p99 of {len(theirs)})",
            "",
            None,
        ),
        Figure(
            f"scrape_speedup_{size}",
            speedup,
            "x",
            1.0,
            "plain registry",
            f">= {TARGET_SPEEDUP:g}x faster at 100k" if checked else "",
            speedup >= TARGET_SPEEDUP if checked else None,
        ),
        Figure(
            f"scrape_plain_text_median_{size}",
            median(ours_plain) * 1e3,
            "ms",
            median(theirs_plain) * 1e3,
            "the same, text/plain without gzip",
            "",
            None,
        ),
        Figure(
            f"scrape_body_gzip_{size}",
            len(our_body) / 2**20,
            "MiB",
            len(their_body) / 2**20,
            "plain registry's OpenMetrics gzip body",
            "",
            None,
        ),
        Figure(
            f"series_{size}",
            float(_series(our_body)),
            "series",
            float(_series(their_body)),
            "series in the plain registry's body",
            "",
            None,
        ),
        Figure(
            f"publish_{size}",
            median(renders) * 1e3,
            "ms",
            median(generates) * 1e3,
            "generate_latest(text) of the plain registry, called directly",
            "",
            None,
        ),
        Figure(
            f"scrape_first_after_poll_{size}",
            median(colds) * 1e3,
            "ms",
            median(generates) * 1e3,
            "generate_latest(text) of the plain registry, called directly",
            "",
            None,
        ),
    ]


def run(quick: bool) -> list[Figure]:
    """Measure at 10,000 and 100,000 image sets (quick: 500)."""
    sizes = (500,) if quick else (10_000, 100_000)
    figures: list[Figure] = []
    for image_sets in sizes:
        figures.extend(measure(image_sets, quick))
    return figures
