"""kill -9 at random moments while events keep arriving: nothing lost, nothing counted twice."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.emulator import EmulatorServer
from exporter.model import FAILURE_STATUSES
from tests.helpers import DEMO_DATASTORE, DEMO_IMAGE_SET

EXPORTER = str(Path(sys.executable).parent / "healthimaging-exporter")
# At least 30 in CI; raise it locally to hunt for rarer interleavings.
TRIALS = int(os.environ.get("HEALTHIMAGING_CRASH_TRIALS", "30"))
SEED = int(os.environ.get("HEALTHIMAGING_CRASH_SEED", "20240604"))
EXTRA_IMAGE_SETS = 5

Event = tuple[str, str]  # (image set id, "COPY_FAILED" | "UPDATE_FAILED" | "forced")
NEW = "new"  # (NEW, workflow_status): healthimaging_new_versions_total, all image sets


class Injector(threading.Thread):
    """Keeps adding failed, transitioned and forced versions; remembers what it added."""

    def __init__(self, emulator: EmulatorServer, image_sets: list[str], seed: int) -> None:
        super().__init__(name="injector", daemon=True)
        self._backend = emulator.backend
        self._image_sets = image_sets
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._counts: Counter[Event] = Counter()
        self.error: BaseException | None = None

    def counts(self) -> Counter[Event]:
        """Return what has been injected so far (every event the exporter can have seen)."""
        with self._lock:
            return Counter(self._counts)

    def halt(self) -> None:
        """Stop injecting and wait for the thread."""
        self._halt.set()
        self.join(timeout=10)
        assert not self.is_alive()
        if self.error is not None:
            raise self.error

    def run(self) -> None:
        """Inject one event every 20-60 ms until halted."""
        try:
            while not self._halt.wait(self._rng.uniform(0.02, 0.06)):
                self._inject_one()
        except BaseException as exc:  # surfaced by halt()
            self.error = exc

    def _inject_one(self) -> None:
        image_set = self._rng.choice(self._image_sets)
        kind = self._rng.choice(("COPY_FAILED", "UPDATE_FAILED", "forced"))
        backend = self._backend
        # Recorded under the lock together with the change, so counts() read after a scrape
        # covers every event that scrape can reflect.
        with self._lock, backend.lock:
            if kind == "COPY_FAILED":
                backend.add_version(DEMO_DATASTORE, image_set, "COPY_FAILED")
            elif kind == "forced":
                backend.add_version(DEMO_DATASTORE, image_set, "UPDATED", forced=True)
            else:
                # A version not in a failure status enters UPDATE_FAILED, once; a version never
                # changes again afterwards, so no transition can hide another.
                candidates = [
                    v.version_id
                    for v in backend.store(DEMO_DATASTORE).image_sets[image_set].versions
                    if v.workflow_status not in FAILURE_STATUSES
                ]
                if not candidates:
                    return
                version = self._rng.choice(candidates)
                backend.set_workflow_status(DEMO_DATASTORE, image_set, version, "UPDATE_FAILED")
            self._counts[(image_set, kind)] += 1


def get(url: str) -> tuple[int, str]:
    """Return status and body; connection errors propagate."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def event_counters(text: str) -> tuple[Counter[Event], float]:
    """Return failed/forced counters per image set, new versions, and the poll count."""
    counts: Counter[Event] = Counter()
    polls = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "healthimaging_failed_versions_total":
                assert s.labels["datastore_id"] == DEMO_DATASTORE
                counts[(s.labels["image_set_id"], s.labels["workflow_status"])] += int(s.value)
            elif s.name == "healthimaging_forced_versions_total":
                counts[(s.labels["image_set_id"], "forced")] += int(s.value)
            elif s.name == "healthimaging_new_versions_total":
                counts[(NEW, s.labels["workflow_status"])] += int(s.value)
            elif s.name == "healthimaging_exporter_poll_duration_seconds_count":
                polls = s.value
    return counts, polls


def stored_counters(state: Path) -> Counter[Event]:
    """Read the failed/forced counters straight from the state file (no exporter running)."""
    counts: Counter[Event] = Counter()
    db = sqlite3.connect(state)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute(
            "SELECT family, image_set_id, workflow_status, value FROM counters "
            "WHERE family IN ('failed_versions', 'forced_versions')"
        )
        for family, image_set, status, amount in rows:
            counts[(image_set, status if family == "failed_versions" else "forced")] += int(amount)
    finally:
        db.close()
    return counts


def assert_not_above(seen: Counter[Event], injected: Counter[Event], when: str) -> None:
    """Every counter is at most what was injected (a doubled event would exceed it)."""
    over = {
        event: (n, injected[event])
        for event, n in seen.items()
        if event[0] != NEW and n > injected[event]
    }
    assert not over, f"{when}: counted more than injected (counted, injected): {over}"


class Exporter:
    """One run of the console script, logging JSON to a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                [EXPORTER, "--config", str(config), "--log.format", "json"],
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )

    def url(self, timeout: float = 20.0) -> str:
        """Wait for the 'listening on' line and return the base URL."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in self.log.read_text().splitlines():
                if line.startswith("{") and line.endswith("}"):
                    message = str(json.loads(line)["message"])
                    if message.startswith("listening on "):
                        return message.removeprefix("listening on ").removesuffix("/metrics")
            assert self.process.poll() is None, self.log.read_text()
            time.sleep(0.02)
        raise AssertionError("the exporter did not start listening: " + self.log.read_text())

    def metrics_when(self, url: str, predicate: str, timeout: float = 30.0) -> str:
        """Scrape until a condition on (counters, polls) holds; return the last body."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            status, body = get(url + "/metrics")
            if status == 200:
                _, polls = event_counters(body)
                if predicate == "polled twice" and polls >= 2:
                    return body
                if predicate == "polled once" and polls >= 1:
                    return body
            time.sleep(0.05)
        raise AssertionError(f"not {predicate} in time: " + self.log.read_text()[-3000:])

    def kill(self) -> None:
        """SIGKILL and reap."""
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=10) == -signal.SIGKILL

    def terminate(self) -> None:
        """SIGTERM; it must exit 0 promptly."""
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=15) == 0, self.log.read_text()[-3000:]


def test_kill_9_at_random_moments_loses_and_doubles_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    started = time.monotonic()
    with EmulatorServer(port=0, dataset="demo") as emulator:
        extra = [emulator.backend.create_image_set(DEMO_DATASTORE) for _ in range(EXTRA_IMAGE_SETS)]
        image_sets = [DEMO_IMAGE_SET, *extra]
        state = tmp_path / "state.db"
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "aws": {"endpoint_url": emulator.url, "max_attempts": 2},
                    "poll": {"interval_seconds": 1, "concurrency": 3},
                    "datastores": [{"datastore_id": DEMO_DATASTORE, "image_sets": image_sets}],
                    "state": {"path": str(state)},
                    "web": {"listen_address": "127.0.0.1:0"},
                }
            )
        )
        # Run 0: the baseline must be complete before anything is injected.
        first = Exporter(config, tmp_path / "run-0.log")
        try:
            url = first.url()
            end = time.monotonic() + 20
            while get(url + "/-/ready")[0] != 200:
                assert time.monotonic() < end, "never ready"
                time.sleep(0.05)
            baseline, _ = event_counters(first.metrics_when(url, "polled once"))
            assert baseline == Counter(), "the baseline counted history"
        finally:
            first.kill()

        injector = Injector(emulator, image_sets, seed=rng.randrange(1 << 30))
        injector.start()
        kills_after_listening = 0
        try:
            for trial in range(1, TRIALS + 1):
                run = Exporter(config, tmp_path / f"run-{trial}.log")
                launched = time.monotonic()
                delay = rng.uniform(0.05, 1.5)
                try:
                    if trial % 6 == 0:
                        # An intermediate restart that is looked at: what it serves from the
                        # persisted state, then after a poll, never exceeds what was injected.
                        url = run.url()
                        _, body = get(url + "/metrics")
                        assert_not_above(
                            event_counters(body)[0], injector.counts(), f"run {trial} at start"
                        )
                        body = run.metrics_when(url, "polled once")
                        assert_not_above(
                            event_counters(body)[0], injector.counts(), f"run {trial} polled"
                        )
                    time.sleep(max(0.0, launched + delay - time.monotonic()))
                    if "listening on" in run.log.read_text():
                        kills_after_listening += 1
                finally:
                    run.kill()
                assert_not_above(stored_counters(state), injector.counts(), f"after kill {trial}")
        finally:
            injector.halt()
        injected = injector.counts()
        assert sum(injected.values()) > 100, injected

        # The last run: one poll after the last injection must count exactly what was injected.
        last = Exporter(config, tmp_path / "run-last.log")
        try:
            url = last.url()
            counted, _ = event_counters(last.metrics_when(url, "polled twice"))
        finally:
            last.terminate()
        events = {k: v for k, v in counted.items() if k[0] != NEW and v}
        assert events == {k: v for k, v in injected.items() if v}
        # New versions: every COPY_FAILED one, and every forced one (UPDATED, or UPDATE_FAILED
        # when it was transitioned before a poll saw it).
        total = Counter[str]()
        for (_, kind), n in injected.items():
            total[kind] += n
        assert counted[(NEW, "COPY_FAILED")] == total["COPY_FAILED"]
        assert counted[(NEW, "UPDATED")] + counted[(NEW, "UPDATE_FAILED")] == total["forced"]
        assert stored_counters(state) == events  # integrity_check inside
    elapsed = time.monotonic() - started
    # Most kills must land in a running exporter, not while Python is still importing.
    assert kills_after_listening >= TRIALS // 2, kills_after_listening
    assert elapsed < 120, f"took {elapsed:.0f}s"
