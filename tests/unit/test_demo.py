"""exporter/demo.py: a failure and a forced version to watch within the demo's first 30 s."""

from __future__ import annotations

import itertools

import pytest

from exporter.demo import (
    DEMO_DATASTORE,
    WATCHED_IMAGE_SET,
    Activity,
    _demo_image_sets,
    announcement,
    demo_schedule,
)
from exporter.emulator import EmulatorServer


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def emulator() -> EmulatorServer:
    """The demo data in an emulator backend (never started: no network)."""
    return EmulatorServer(port=0, dataset="demo")


def test_the_watched_image_set_is_in_the_demo_data(emulator: EmulatorServer) -> None:
    assert WATCHED_IMAGE_SET in _demo_image_sets(emulator)


def test_the_first_copy_failed_and_forced_versions_come_within_30_seconds(
    emulator: EmulatorServer,
) -> None:
    image_sets = _demo_image_sets(emulator)
    events = list(itertools.islice(demo_schedule(image_sets), 50))
    first_failed = next(e for e in events if e.status == "COPY_FAILED")
    first_forced = next(e for e in events if e.forced)
    assert first_failed.at <= 30
    assert first_forced.at <= 30
    assert first_failed.image_set == first_forced.image_set == WATCHED_IMAGE_SET
    times = [e.at for e in events]
    assert times == sorted(set(times)) and times[0] > 0
    # then random activity over every image set goes on
    assert {e.image_set for e in events} == set(image_sets)
    assert len({e.status for e in events}) > 2


def test_the_activity_adds_the_schedule_to_the_emulator(
    emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    image_sets = _demo_image_sets(emulator)
    store = emulator.backend.store(DEMO_DATASTORE)
    before = len(store.image_sets[WATCHED_IMAGE_SET].versions)
    clock = FakeClock()
    activity = Activity(emulator, image_sets, clock=clock)
    # The runtime calls the job every second; each call adds what has come due.
    while clock.now < 29:
        clock.now += 1.0
        activity()
    added = store.image_sets[WATCHED_IMAGE_SET].versions[before:]
    assert [(v.workflow_status, bool(v.forced)) for v in added] == [
        ("COPY_FAILED", False),
        ("UPDATED", True),
    ]
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        f"demo: image set {WATCHED_IMAGE_SET} got version {added[0].version_id}: COPY_FAILED",
        f"demo: image set {WATCHED_IMAGE_SET} got version {added[1].version_id}: UPDATED (forced)",
    ]


def test_the_announcement_says_which_image_set_to_watch_and_when() -> None:
    text = announcement("http://127.0.0.1:4566", 9999, (WATCHED_IMAGE_SET, "a" * 32))
    assert "http://127.0.0.1:9999/metrics" in text
    assert f"image set {WATCHED_IMAGE_SET} gets COPY_FAILED at 10 s" in text
    assert "UPDATED (forced) at 20 s" in text
    assert f"grep {WATCHED_IMAGE_SET}" in text
