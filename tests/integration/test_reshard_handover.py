"""Reshards over real HTTP: two exporter processes' state files, one failure, counted once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from exporter.config import Config
from exporter.emulator import EmulatorServer
from exporter.poller import shard_of
from exporter.service import ExporterService
from tests.integration.conftest import DEMO_DATASTORE, ConfigFactory
from tests.integration.test_poll import Samples, samples_of

ServiceFactory = Callable[[Config], ExporterService]
DEMO_IMAGE_SETS = [
    "ea92b0d8838c72a3f25d00d13616f87e",
    "b7d2c4e6f8a0b2c4d6e8f0a2b4c6d8e0",
    "c0ffee00c0ffee00c0ffee00c0ffee00",
    "d00d00d00d00d00d00d00d00d00d00d0",
    "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1",
    "f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2",
    "a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3",
    "deadbeefdeadbeefdeadbeefdeadbeef",
]
# Both in shard 1 of 2: they move from B to A when total_shards goes from 2 to 1.
COPYING_ONE = "f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2"  # its version 2 is COPYING in the demo
UPDATING_ONE = "b7d2c4e6f8a0b2c4d6e8f0a2b4c6d8e0"  # version 4 UPDATING_...; an old UPDATE_FAILED


def failed(samples: Samples) -> dict[tuple[str, str], float]:
    """healthimaging_failed_versions_total as {(image set, status): value}."""
    return {
        (dict(labels)["image_set_id"], dict(labels)["workflow_status"]): v
        for (name, labels), v in samples.items()
        if name == "healthimaging_failed_versions_total"
    }


def new_versions(samples: Samples) -> float:
    return sum(v for (name, _), v in samples.items() if name == "healthimaging_new_versions_total")


def test_failures_while_image_sets_move_are_counted_once_across_the_processes(
    emulator: EmulatorServer,
    make_config: ConfigFactory,
    service_for: ServiceFactory,
    tmp_path: Path,
) -> None:
    assert shard_of(COPYING_ONE, 2) == 1 and shard_of(UPDATING_ONE, 2) == 1

    def config(name: str, shard: int, total: int) -> Config:
        return make_config(
            DEMO_IMAGE_SETS,
            state={"path": str(tmp_path / f"{name}.db")},
            shard=shard,
            total_shards=total,
        )

    # Two shards, each its own process and state file: both baseline their half.
    a = service_for(config("a", 0, 2))
    b = service_for(config("b", 1, 2))
    for service in (a, b):
        assert service.poll().ok and service.poll().ok
    assert not failed(samples_of(a)) and not failed(samples_of(b))
    a.close()
    b.close()

    # While total_shards goes to 1, B's image sets fail: a new COPY_FAILED version, and an
    # in-progress update that ends in UPDATE_FAILED.
    backend = emulator.backend
    backend.add_version(DEMO_DATASTORE, COPYING_ONE, "COPY_FAILED", message="INVALID_REQUEST: x")
    backend.set_workflow_status(
        DEMO_DATASTORE, UPDATING_ONE, "4", "UPDATE_FAILED", message="INTERNAL_ERROR: y"
    )

    # A process on a fresh state file would see the fleet for the first time: a baseline.
    fresh = service_for(config("fresh", 0, 1))
    assert fresh.poll().ok
    assert not failed(samples_of(fresh)) and new_versions(samples_of(fresh)) == 0
    fresh.close()

    # A, which watched the data store before its assignment changed, counts what moved to it
    # after its last complete poll, and none of the old versions (the demo's old failures).
    a = service_for(config("a", 0, 1))
    assert a.poll().ok and a.poll().ok
    b = service_for(config("b", 1, 2))  # B, restarted (not polled): its persisted counters
    counted = failed(samples_of(a))
    assert counted == {(COPYING_ONE, "COPY_FAILED"): 1, (UPDATING_ONE, "UPDATE_FAILED"): 1}
    assert not failed(samples_of(b))
    assert new_versions(samples_of(a)) == 2  # the two changed versions, nothing older
    reasons = {
        dict(labels)["reason"]: v
        for (name, labels), v in samples_of(a).items()
        if name == "healthimaging_failures_total"
    }
    assert reasons == {"INVALID_REQUEST": 1, "INTERNAL_ERROR": 1}


def test_a_new_shard_process_counts_a_failure_that_happened_while_its_image_sets_moved(
    emulator: EmulatorServer,
    make_config: ConfigFactory,
    service_for: ServiceFactory,
    tmp_path: Path,
) -> None:
    moving = "b7d2c4e6f8a0b2c4d6e8f0a2b4c6d8e0"
    assert shard_of(moving, 3) == 1

    def config(name: str, shard: int, total: int) -> Config:
        return make_config(
            DEMO_IMAGE_SETS,
            state={"path": str(tmp_path / f"{name}.db")},
            shard=shard,
            total_shards=total,
        )

    # One process watches the whole fleet; its first poll is the baseline.
    a = service_for(config("a", 0, 1))
    assert a.poll().ok and a.poll().ok
    assert not failed(samples_of(a))
    a.close()

    # Scaled to three shards: while the new pods start, an image set of shard 1 fails.
    emulator.backend.add_version(DEMO_DATASTORE, moving, "COPY_FAILED", message="INVALID_REQUEST")
    shards = [service_for(config(name, n, 3)) for n, name in enumerate(("a", "b", "c"))]
    for service in shards:
        assert service.poll().ok and service.poll().ok
    counted = [failed(samples_of(service)) for service in shards]
    # Shard 1 starts on an empty state file: it joins a running fleet (the lookback), so the
    # failure that happened while its image sets moved counts there, once; the demo's old
    # failures are a baseline everywhere.
    assert counted == [{}, {(moving, "COPY_FAILED"): 1}, {}]
