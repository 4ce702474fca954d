"""kill -9 an exporter process while import jobs fail: each failed job is counted exactly once."""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.emulator import EmulatorServer
from tests.helpers import DEMO_DATASTORE, DEMO_IMAGE_SET
from tests.integration.test_crash_safety import Exporter, get

JOBS = 6
TRIALS = 8
SEED = 20261129


def import_metrics(url: str) -> tuple[float | None, float | None, float]:
    """Return (FAILED ended total, SUBMITTED gauge, polls) from a scrape, None where absent."""
    status, body = get(url + "/metrics")
    assert status == 200
    failed = submitted = None
    polls = 0.0
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            labels = s.labels
            if (
                s.name == "healthimaging_import_jobs_ended_total"
                and labels["job_status"] == "FAILED"
            ):
                failed = s.value
            elif s.name == "healthimaging_import_jobs" and labels["job_status"] == "SUBMITTED":
                submitted = s.value
            elif s.name == "healthimaging_exporter_poll_duration_seconds_count":
                polls = s.value
    return failed, submitted, polls


def wait_until(url: str, check: str, exporter: Exporter, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        _, submitted, polls = import_metrics(url)
        if check == "baseline" and polls >= 1 and submitted == 0:
            return
        if check == "all active" and submitted == JOBS:
            return
        time.sleep(0.05)
    raise AssertionError(f"not {check} in time: " + exporter.log.read_text()[-3000:])


def stored_failed(state: Path) -> int:
    db = sqlite3.connect(state)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        row = db.execute(
            "SELECT value FROM import_counters WHERE name = 'ended' AND label = 'FAILED'"
        ).fetchone()
    finally:
        db.close()
    return int(row[0]) if row else 0


def test_failed_import_jobs_count_once_across_kill_9(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    with EmulatorServer(port=0, dataset="demo") as emulator:
        backend = emulator.backend
        state = tmp_path / "state.db"
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "aws": {"endpoint_url": emulator.url, "max_attempts": 2},
                    "poll": {"interval_seconds": 1},
                    "datastores": [
                        {"datastore_id": DEMO_DATASTORE, "image_sets": [DEMO_IMAGE_SET]}
                    ],
                    "state": {"path": str(state)},
                    "web": {"listen_address": "127.0.0.1:0"},
                }
            )
        )
        first = Exporter(config, tmp_path / "run-0.log")
        try:
            url = first.url()
            wait_until(url, "baseline", first)
            jobs = [
                backend.start_import_job(DEMO_DATASTORE, submitted_seconds=86_400)
                for _ in range(JOBS)
            ]
            wait_until(url, "all active", first)  # seen active: their end is news
        finally:
            first.kill()

        ended = 0
        for trial in range(1, TRIALS + 1):
            run = Exporter(config, tmp_path / f"run-{trial}.log")
            try:
                time.sleep(rng.uniform(0.0, 1.2))
                if ended < JOBS:
                    backend.set_import_job_outcome(
                        DEMO_DATASTORE,
                        jobs[ended],
                        "FAILED",
                        message=f"INVALID_REQUEST: trial {trial}",
                        now=True,
                    )
                    ended += 1
                time.sleep(rng.uniform(0.0, 1.5))
            finally:
                run.kill()
            assert stored_failed(state) <= ended, f"after kill {trial}: counted more than failed"

        last = Exporter(config, tmp_path / "run-last.log")
        try:
            url = last.url()
            end = time.monotonic() + 30
            while import_metrics(url)[0] != JOBS:
                assert time.monotonic() < end, last.log.read_text()[-3000:]
                time.sleep(0.05)
            polls = import_metrics(url)[2]
            while import_metrics(url)[2] < polls + 2:  # two more polls count nothing more
                assert time.monotonic() < end + 30, last.log.read_text()[-3000:]
                time.sleep(0.05)
            failed, submitted, _ = import_metrics(url)
            assert (failed, submitted) == (JOBS, 0)
            last.terminate()
        finally:
            if last.process.poll() is None:
                last.kill()
        assert stored_failed(state) == JOBS
