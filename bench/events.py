"""Scenario 8: detection latency with the event path on vs polling only, in one run.

Two daemons on copies of one backfilled state of 10,000 image sets, both with a 60 s poll
interval, against one emulator: one also consumes HealthImaging's events from an SQS queue
(moto's standalone server), the other only polls. COPY_FAILED versions are added to random image
sets at random moments over about 2.5 intervals; both `/metrics` are scraped every 100 ms and
each sample is the time from `add_version` to the first scrape counting it. Also: HealthImaging
API calls per cycle of each daemon over the same window (events add one listing per event).
"""

from __future__ import annotations

import os
import random
import shutil
import time
from dataclasses import dataclass, field

from bench.common import PLAIN_HEADERS, Figure, Scraper, median, percentile, use_fake_credentials
from bench.detection import failed_count
from bench.steady import FAST_LIMITS, exporter_config, state_path, wait_for_backfill
from exporter.config import Config
from exporter.daemon import Daemon
from exporter.emulator import EmulatorServer
from exporter.emulator.backend import Backend
from exporter.emulator.events import EventSettings
from exporter.service import ExporterService
from tests.moto import MotoServer  # the tests' moto standalone server on a free port

INTERVAL = 60.0
TARGET_P99 = 5.0  # seconds, with events on
SCRAPE_EVERY = 0.1


@dataclass
class Watched:
    """One daemon being measured."""

    name: str
    daemon: Daemon
    scraper: Scraper
    latencies: dict[str, float] = field(default_factory=dict)
    calls_before: float = 0.0
    cycles_before: float = 0.0
    since: float = 0.0  # time.monotonic() of calls_before


def _scrape(scraper: Scraper) -> bytes:
    status, body = scraper.get("/metrics", PLAIN_HEADERS)
    if status != 200:
        raise RuntimeError(f"GET /metrics: status {status}")
    return body


def _api_calls_and_cycles(body: bytes) -> tuple[float, float]:
    """HealthImaging attempts (all operations and outcomes) and completed cycles."""
    calls = cycles = 0.0
    for line in body.split(b"\n"):
        if line.startswith(b"healthimaging_exporter_api_requests_total{"):
            calls += float(line.rsplit(b" ", 1)[1])
        elif line.startswith(b"healthimaging_exporter_poll_duration_seconds_count"):
            cycles = float(line.rsplit(b" ", 1)[1])
    return calls, cycles


def _copy_state(source: str, name: str) -> str:
    target = state_path(name)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(source + suffix):
            shutil.copyfile(source + suffix, target + suffix)
    return target


def _wait_first_cycle(daemon: Daemon) -> None:
    end = time.monotonic() + 120
    while daemon.service.poller.completed_cycles < 1:
        if time.monotonic() > end:
            raise RuntimeError("the daemon's first poll did not finish")
        time.sleep(0.05)


def run(quick: bool) -> list[Figure]:
    """Measure both daemons (quick: 300 image sets, a 5 s interval, 3 samples)."""
    use_fake_credentials()
    image_sets = 300 if quick else 10_000
    interval = 5.0 if quick else INTERVAL
    samples = 3 if quick else 20
    rng = random.Random(8)
    base = state_path("events-base.db")
    with MotoServer() as moto, EmulatorServer(port=0, dataset=None) as emulator:
        queue_url = moto.client("sqs").create_queue(QueueName="bench-events")["QueueUrl"]
        backend = emulator.backend
        datastore = backend.create_datastore(name="events")
        ids = backend.generate(datastore, image_sets, seed=11)
        setup = ExporterService(
            exporter_config(emulator.url, datastore, base, aws={"rate_limits": FAST_LIMITS})
        )
        try:
            setup.poll()
            wait_for_backfill(setup, datastore, timeout=600)
        finally:
            setup.stop()
            setup.close()
        poll = {"interval_seconds": interval}
        events = {"queue_url": queue_url, "endpoint_url": moto.url, "wait_seconds": 5}
        configs: dict[str, Config] = {
            "events": exporter_config(
                emulator.url, datastore, _copy_state(base, "events-on.db"), poll=poll, events=events
            ),
            "polling": exporter_config(
                emulator.url, datastore, _copy_state(base, "events-off.db"), poll=poll
            ),
        }
        backend.configure_events(EventSettings(queue_url=queue_url, endpoint_url=moto.url))
        watched: list[Watched] = []
        try:
            for name, config in configs.items():
                daemon = Daemon(config).start()
                watched.append(Watched(name, daemon, Scraper(daemon.url)))
            for w in watched:
                _wait_first_cycle(w.daemon)
                w.calls_before, w.cycles_before = _api_calls_and_cycles(_scrape(w.scraper))
                w.since = time.monotonic()
            _measure(backend, datastore, rng.sample(ids, samples), watched, interval, rng)
            results = {w.name: w for w in watched}
            calls = {}
            for w in watched:
                after_calls, after_cycles = _api_calls_and_cycles(_scrape(w.scraper))
                made = after_calls - w.calls_before
                cycles = max(1.0, after_cycles - w.cycles_before)
                # Per cycle, and per interval of wall time (the two daemons' windows hold a
                # different number of cycles when their schedules are out of phase).
                per_interval = made / (time.monotonic() - w.since) * interval
                calls[w.name] = (made / cycles, cycles, per_interval, made)
        finally:
            for w in watched:
                w.scraper.close()
                w.daemon.stop()
    on = list(results["events"].latencies.values())
    off = list(results["polling"].latencies.values())
    size = f"{image_sets // 1000}k" if image_sets >= 1000 else str(image_sets)
    polling_is = f"polling only, poll.interval_seconds {interval:g}"
    return [
        Figure(
            f"event_detection_p50_{size}",
            median(on),
            "s",
            median(off),
            f"{polling_is}; {len(on)} samples each",
            "",
            None,
        ),
        Figure(
            f"event_detection_p99_{size}",
            percentile(on, 0.99),
            "s",
            percentile(off, 0.99),
            f"{polling_is}; nearest rank of {len(on)}",
            f"<= {TARGET_P99:g} s with events",
            percentile(on, 0.99) <= TARGET_P99,
        ),
        Figure(
            f"event_api_calls_per_cycle_{size}",
            calls["events"][0],
            "calls",
            calls["polling"][0],
            f"polling only; HealthImaging attempts / cycles over the window "
            f"({calls['events'][3]:g} calls in {calls['events'][1]:g} cycles vs "
            f"{calls['polling'][3]:g} in {calls['polling'][1]:g}; events add one listing per "
            f"event, {samples} events)",
            "",
            None,
        ),
        Figure(
            f"event_api_calls_per_interval_{size}",
            calls["events"][2],
            "calls",
            calls["polling"][2],
            f"polling only; HealthImaging attempts per {interval:g} s of wall time, same window",
            "",
            None,
        ),
    ]


def _measure(
    backend: Backend,
    datastore: str,
    chosen: list[str],
    watched: list[Watched],
    interval: float,
    rng: random.Random,
) -> None:
    """Add COPY_FAILED versions at random moments; record when each daemon shows each one."""
    spread = 2.5 * interval / len(chosen)  # mean gap: the samples cover ~2.5 intervals
    due = time.monotonic()
    schedule = []
    for image_set in chosen:
        due += rng.uniform(0.2 * spread, 1.8 * spread)
        schedule.append((due, image_set))
    injected: dict[str, float] = {}
    deadline = schedule[-1][0] + interval + 60
    while any(len(w.latencies) < len(chosen) for w in watched):
        now = time.monotonic()
        if now > deadline:
            raise RuntimeError("a COPY_FAILED version was not seen in time")
        while schedule and schedule[0][0] <= now:
            _, image_set = schedule.pop(0)
            backend.add_version(datastore, image_set, "COPY_FAILED", message="bench")
            injected[image_set] = time.monotonic()
        for w in watched:
            pending = [i for i in injected if i not in w.latencies]
            if not pending:
                continue
            body = _scrape(w.scraper)
            seen = time.monotonic()
            for image_set in pending:
                if failed_count(body, image_set) > 0:
                    w.latencies[image_set] = seen - injected[image_set]
        time.sleep(max(0.0, SCRAPE_EVERY - (time.monotonic() - now)))
