"""Scenario 1: API calls per steady-state cycle of `image_sets: all`, vs a naive full listing."""

from __future__ import annotations

import math
import os
import random
import time
from typing import Any

from bench import fleet
from bench.common import Figure, use_fake_credentials
from exporter.config import Config, parse_config
from exporter.emulator import EmulatorServer
from exporter.emulator.testing import ManualClock
from exporter.service import ExporterService

INTERVAL = 60.0  # poll.interval_seconds, the default
RECONCILE = 86_400.0  # discovery.reconcile_seconds, the default
CHANGING = 0.01  # share of the image sets that get a new version before each cycle
TARGET_FACTOR = 1.2
# For the setup only: loopback takes it, and 10,000 image sets backfill in seconds, not minutes.
SETUP_RATE = 2000.0
FAST_LIMITS = {"ListImageSetVersions": SETUP_RATE, "SearchImageSets": SETUP_RATE}


def exporter_config(
    endpoint: str,
    datastore_id: str,
    state_path: str,
    image_sets: list[str] | str = "all",
    **sections: Any,
) -> Config:
    """Return a config for one data store on the emulator; keyword arguments replace sections."""
    raw: dict[str, Any] = {
        "aws": {"region": "us-east-1", "endpoint_url": endpoint},
        "poll": {"interval_seconds": INTERVAL},
        "datastores": [{"datastore_id": datastore_id, "image_sets": image_sets}],
        "state": {"path": state_path},
        "web": {"listen_address": "127.0.0.1:0"},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(name), dict):
            raw[name] = {**raw[name], **value}
        else:
            raw[name] = value
    return parse_config(raw, "bench config")


def wait_for_backfill(service: ExporterService, datastore_id: str, timeout: float) -> float:
    """Run the inventory listing's pages until complete; return the seconds it took."""
    start = time.monotonic()
    while not service.poller.view().datastores[datastore_id].backfill_complete:
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"the backfill did not complete within {timeout:.0f}s")
        service.run_backfills(slice_seconds=0.0)  # as the runtime's backfill job does
        if not service.poller.backfilling:
            time.sleep(0.05)
    return time.monotonic() - start


def state_path(name: str) -> str:
    """Return a fresh state file path in the bench's scratch directory."""
    path = os.path.join(fleet.workdir(), name)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return path


def _naive_listing(emulator: EmulatorServer, datastore_id: str, ids: list[str]) -> int:
    """Count one cycle's calls for an explicit list of every image set, never searched."""
    config = exporter_config(
        emulator.url,
        datastore_id,
        state_path("steady-naive.db"),
        image_sets=ids,
        aws={"rate_limits": FAST_LIMITS},
        discovery={"list_threshold": len(ids)},  # a list this long is listed in full each cycle
    )
    service = ExporterService(config)
    try:
        emulator.backend.reset_request_counts()
        result = service.poll()
        if result.failed or result.timed_out:
            raise RuntimeError(f"the naive listing cycle failed: {result}")
        counts = emulator.backend.request_counts()
    finally:
        service.close()
    return sum(counts.values())


def run(quick: bool) -> list[Figure]:
    """Count calls in steady cycles over 10,000 image sets, 1 % changing (quick: 1,000)."""
    use_fake_credentials()
    image_sets = 1_000 if quick else 10_000
    cycles = 3 if quick else 8
    changing = max(1, round(image_sets * CHANGING))
    rng = random.Random(11)
    # One simulated clock for the emulator's timestamps and the exporter's cursor, moved by one
    # interval per cycle: the search window (cursor - overlap_seconds) spans what it would in a
    # daemon, not everything since the bench started. The rate budget keeps real time.
    clock = ManualClock(time.time())
    with EmulatorServer(port=0, dataset=None) as emulator:
        backend = emulator.backend
        backend.clock = clock
        datastore = backend.create_datastore(name="steady")
        ids = backend.generate(datastore, image_sets, seed=3)
        config = exporter_config(
            emulator.url,
            datastore,
            state_path("steady.db"),
            aws={"rate_limits": FAST_LIMITS},
        )
        service = ExporterService(config, clock=clock)
        try:
            service.poll()  # starts the backfill
            wait_for_backfill(service, datastore, timeout=600)
            clock.now += INTERVAL
            service.poll()  # the first steady cycle re-finds the backfill's last updates
            rows: list[tuple[int, int, int]] = []  # (changed, ListImageSetVersions, search pages)
            for _ in range(cycles):
                clock.now += INTERVAL / 2
                chosen = rng.sample(ids, changing)
                for image_set in chosen:
                    backend.add_version(datastore, image_set, "UPDATED")
                clock.now += INTERVAL / 2
                backend.reset_request_counts()
                result = service.poll()
                counts = backend.request_counts()
                if result.failed or result.timed_out:
                    raise RuntimeError(f"a steady cycle failed: {result}")
                rows.append(
                    (
                        len(chosen),
                        counts.get("ListImageSetVersions", 0),
                        counts.get("SearchImageSets", 0),
                    )
                )
        finally:
            service.close()
        baseline = _naive_listing(emulator, datastore, ids)
    reconcile = math.ceil(image_sets * INTERVAL / RECONCILE)
    calls = [lists + pages for _, lists, pages in rows]
    bounds = [TARGET_FACTOR * changed + pages for changed, _, pages in rows]
    met = all(c <= b for c, b in zip(calls, bounds, strict=True))
    slack = min(b - c for c, b in zip(calls, bounds, strict=True))
    size = f"{image_sets // 1000}k"
    naive = f"naive full listing: one ListImageSetVersions per image set, one cycle ({size})"
    each = ", ".join(f"{lists}+{pages}" for _, lists, pages in rows)
    return [
        Figure(
            f"calls_per_cycle_max_{size}",
            float(max(calls)),
            "calls",
            float(baseline),
            naive,
            f"every cycle <= 1.2 x changed ({changing}) + its search pages"
            f" (smallest margin {slack:g})",
            met,
        ),
        Figure(
            f"calls_per_cycle_mean_{size}",
            sum(calls) / len(calls),
            "calls",
            float(baseline),
            f"{naive}; {cycles} cycles, List+Search each: {each}",
            "",
            None,
        ),
        Figure(
            f"list_calls_per_cycle_max_{size}",
            float(max(lists for _, lists, _ in rows)),
            "calls",
            float(changing + reconcile),
            f"changed image sets ({changing}) + reconciliation ceil(n x interval / period)"
            f" = {reconcile}",
            "",
            None,
        ),
        Figure(
            f"search_pages_per_cycle_max_{size}",
            float(max(pages for _, _, pages in rows)),
            "calls",
            None,
            "SearchImageSets pages of 50 since cursor - overlap_seconds (300 s + 1 interval)",
            "",
            None,
        ),
    ]
