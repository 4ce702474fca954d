"""Scenario 5: time from a new COPY_FAILED version to its count on /metrics, 15 s interval."""

from __future__ import annotations

import random
import time

from bench.common import PLAIN_HEADERS, Figure, Scraper, median, use_fake_credentials
from bench.steady import FAST_LIMITS, exporter_config, state_path, wait_for_backfill
from exporter.daemon import Daemon
from exporter.emulator import EmulatorServer
from exporter.service import ExporterService

INTERVAL = 15.0
SLACK = 2.0  # the target: at most interval + 2 s
SCRAPE_EVERY = 0.1
METRIC = b"healthimaging_failed_versions_total{"


def failed_count(body: bytes, image_set_id: str) -> float:
    """Return the image set's COPY_FAILED count in a text exposition (0 when absent)."""
    wanted = f'image_set_id="{image_set_id}"'.encode()
    for line in body.split(b"\n"):
        if line.startswith(METRIC) and wanted in line and b'workflow_status="COPY_FAILED"' in line:
            return float(line.rsplit(b" ", 1)[1])
    return 0.0


def _scrape(scraper: Scraper) -> bytes:
    status, body = scraper.get("/metrics", PLAIN_HEADERS)
    if status != 200:
        raise RuntimeError(f"GET /metrics: status {status}")
    return body


def _detect(scraper: Scraper, image_set_id: str, before: float, timeout: float) -> float:
    """Scrape every 100 ms until the count rises; return the seconds since `start`."""
    start = time.monotonic()
    while True:
        body = _scrape(scraper)
        elapsed = time.monotonic() - start
        if failed_count(body, image_set_id) > before:
            return elapsed
        if elapsed > timeout:
            raise RuntimeError(f"the new COPY_FAILED version was not seen in {timeout:.0f}s")
        time.sleep(max(0.0, SCRAPE_EVERY - (time.monotonic() - start - elapsed)))


def _poll_seconds(body: bytes) -> tuple[float, int]:
    """Return the mean poll cycle duration and the number of cycles, from the exposition."""
    total = count = 0.0
    for line in body.split(b"\n"):
        if line.startswith(b"healthimaging_exporter_poll_duration_seconds_sum"):
            total = float(line.rsplit(b" ", 1)[1])
        elif line.startswith(b"healthimaging_exporter_poll_duration_seconds_count"):
            count = float(line.rsplit(b" ", 1)[1])
    return (total / count if count else float("nan")), round(count)


def run(quick: bool) -> list[Figure]:
    """Measure detection latency with 10,000 tracked image sets (quick: 500, 5 s, 2 samples)."""
    use_fake_credentials()
    image_sets = 500 if quick else 10_000
    interval = 5.0 if quick else INTERVAL
    samples = 2 if quick else 5
    rng = random.Random(5)
    path = state_path("detection.db")
    with EmulatorServer(port=0, dataset=None) as emulator:
        backend = emulator.backend
        datastore = backend.create_datastore(name="detection")
        ids = backend.generate(datastore, image_sets, seed=9)
        # The backfill with a loopback budget, in a service of its own; the daemon then starts
        # on that state (as after a restart) with the default budget.
        setup = ExporterService(
            exporter_config(emulator.url, datastore, path, aws={"rate_limits": FAST_LIMITS})
        )
        try:
            setup.poll()
            wait_for_backfill(setup, datastore, timeout=600)
        finally:
            setup.stop()
            setup.close()
        config = exporter_config(emulator.url, datastore, path, poll={"interval_seconds": interval})
        daemon = Daemon(config).start()
        scraper = Scraper(daemon.url)
        latencies: list[float] = []
        try:
            end = time.monotonic() + 120
            while daemon.service.poller.completed_cycles < 1:
                if time.monotonic() > end:
                    raise RuntimeError("the daemon's first poll did not finish")
                time.sleep(0.05)
            for image_set in rng.sample(ids, samples):
                time.sleep(rng.uniform(0.0, interval))  # a random moment of the schedule
                before = failed_count(_scrape(scraper), image_set)
                backend.add_version(datastore, image_set, "COPY_FAILED", message="bench")
                latencies.append(_detect(scraper, image_set, before, 3 * interval + 30))
            cycles = _poll_seconds(_scrape(scraper))
        finally:
            scraper.close()
            daemon.stop()
    target = interval + SLACK
    size = f"{image_sets // 1000}k" if image_sets >= 1000 else str(image_sets)
    baseline_what = f"poll.interval_seconds ({interval:g} s): the wait for the next cycle alone"
    return [
        Figure(
            f"detection_max_{size}",
            max(latencies),
            "s",
            interval,
            f"{baseline_what}; max of {samples}",
            f"<= interval + {SLACK:g} s = {target:g} s",
            max(latencies) <= target,
        ),
        Figure(
            f"detection_median_{size}",
            median(latencies),
            "s",
            interval / 2,
            f"half the interval: the mean wait at a random moment; {samples} samples: "
            + ", ".join(f"{v:.2f}" for v in latencies),
            "",
            None,
        ),
        Figure(
            f"detection_poll_cycle_mean_{size}",
            cycles[0],
            "s",
            None,
            f"healthimaging_exporter_poll_duration_seconds sum / count, {cycles[1]} cycles",
            "",
            None,
        ),
    ]
