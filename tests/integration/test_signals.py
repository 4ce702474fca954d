"""Signals and threads: bursts of SIGTERM/SIGINT always end the daemon; a stop leaves no thread.

Before the runtime owned every thread, a second signal landing while the first was handled
deadlocked the main thread in 1-2 % of double signals (the process polled on and never exited).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import parse_config
from exporter.daemon import Daemon
from exporter.emulator import EmulatorServer, Faults
from exporter.service import ExporterService
from tests.helpers import DEMO_DATASTORE, DEMO_IMAGE_SET, run_backfill, wait_for

EXPORTER = str(Path(sys.executable).parent / "healthimaging-exporter")
# The done-when of issue 11: every run exits within this many seconds of its first signal.
EXIT_WITHIN_SECONDS = 8.0
# 50 per CI run; `SIGNAL_BURSTS=200 pytest tests/integration/test_signals.py` for the long run.
BURSTS = int(os.environ.get("SIGNAL_BURSTS", "50"))
PARALLEL = 4  # daemons started at once: most of a run is the interpreter's start-up


@dataclass(frozen=True)
class BurstRun:
    """One daemon's life: the signals it got, how it ended, what it logged."""

    signals: tuple[int, ...]
    returncode: int | None
    exit_seconds: float
    log: str


def tiny_config(emulator: EmulatorServer, directory: Path, **aws: Any) -> Path:
    """One image set, a long interval, short AWS timeouts: a daemon that is quick to start."""
    directory.mkdir(parents=True, exist_ok=True)
    raw = {
        "aws": {"endpoint_url": emulator.url, "max_attempts": 1, **aws},
        "poll": {"interval_seconds": 60},
        "datastores": [{"datastore_id": DEMO_DATASTORE, "image_sets": [DEMO_IMAGE_SET]}],
        "state": {"path": str(directory / "state.db")},
        "web": {"listen_address": "127.0.0.1:0"},
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def burst_once(config: Path, seed: int, reload_first: bool = False) -> BurstRun:
    """Start a daemon; once it listens, send 2-6 SIGTERM/SIGINT 0-3 ms apart; time the exit."""
    rng = random.Random(seed)
    signals = tuple(rng.choice((signal.SIGTERM, signal.SIGINT)) for _ in range(rng.randint(2, 6)))
    if reload_first:
        signals = (signal.SIGHUP, *signals)
    log = config.parent / f"daemon-{seed}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([EXPORTER, "--config", str(config)], stderr=sink)
    try:
        wait_for(lambda: "listening on" in log.read_text(), timeout=60)
        # Somewhere in the first cycle or just after it: both are worth hitting.
        time.sleep(rng.uniform(0, 0.05))
        first = time.monotonic()
        for signum in signals:
            process.send_signal(signum)
            time.sleep(rng.uniform(0, 0.003))
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=EXIT_WITHIN_SECONDS)
        exit_seconds = time.monotonic() - first
        return BurstRun(signals, process.poll(), exit_seconds, log.read_text())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def run_bursts(config_for: Any, count: int, reload_first: bool = False) -> list[BurstRun]:
    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(lambda n: burst_once(config_for(n), n, reload_first), range(count)))


def assert_all_exited(runs: list[BurstRun]) -> None:
    stuck = [r for r in runs if r.returncode is None]
    assert not stuck, f"{len(stuck)} of {len(runs)} daemons did not exit: {stuck[0]}"
    for run in runs:
        assert run.returncode == 0, run
        assert "Traceback" not in run.log, run.log
        assert run.log.rstrip().endswith("stopped"), run.log
    worst = max(r.exit_seconds for r in runs)
    # Printed for the record (the figure in the closing note), not asserted beyond 8 s.
    print(f"\n{len(runs)} bursts: every daemon exited, the slowest {worst:.2f}s after its signal")


def test_signal_bursts_always_stop_the_daemon(tmp_path: Path) -> None:
    with EmulatorServer(port=0, dataset="demo") as emulator:
        runs = run_bursts(lambda n: tiny_config(emulator, tmp_path / str(n)), BURSTS)
    assert_all_exited(runs)


def test_signal_bursts_stop_the_daemon_while_an_aws_call_hangs(tmp_path: Path) -> None:
    with EmulatorServer(port=0, dataset="demo") as emulator:
        # Every call hangs far longer than the read timeout: the stop waits for the timeout.
        emulator.backend.set_faults(Faults(latency_seconds=4.0))
        runs = run_bursts(
            lambda n: tiny_config(emulator, tmp_path / str(n), read_timeout_seconds=1),
            BURSTS,
        )
        emulator.backend.set_faults(Faults())
    assert_all_exited(runs)


def test_a_reload_in_progress_does_not_block_the_stop(tmp_path: Path) -> None:
    """SIGHUP, then the burst: the reload job must not hold up the scheduler's shutdown."""
    with EmulatorServer(port=0, dataset="demo") as emulator:
        runs = run_bursts(lambda n: tiny_config(emulator, tmp_path / str(n)), 20, True)
    assert_all_exited(runs)


def exporter_threads(emulator: EmulatorServer | None = None) -> set[threading.Thread]:
    """Every live thread but the emulator's request handlers (it shares this process)."""
    emulator_server = getattr(emulator, "_server", None)
    return {
        t
        for t in threading.enumerate()
        if emulator_server is None
        or getattr(getattr(t, "_target", None), "__self__", None) is not emulator_server
    }


def test_a_stop_leaves_no_thread_behind(emulator: EmulatorServer, tmp_path: Path) -> None:
    """In-process: cycles, backfill pages, a reload and a hanging call; then nothing is left."""
    datastore = emulator.backend.create_datastore(name="threads")
    emulator.backend.generate(datastore, 60, seed=11)
    raw: dict[str, Any] = {
        "aws": {
            "endpoint_url": emulator.url,
            "max_attempts": 1,
            "read_timeout_seconds": 1,
            "rate_limits": {"ListImageSetVersions": 500, "SearchImageSets": 500},
        },
        "poll": {"interval_seconds": 1, "concurrency": 4},
        "datastores": [
            {"datastore_id": datastore, "image_sets": "all"},
            {"datastore_id": DEMO_DATASTORE, "image_sets": [DEMO_IMAGE_SET]},
        ],
        "state": {"path": str(tmp_path / "state.db")},
        "web": {"listen_address": ["127.0.0.1:0", "127.0.0.1:0"]},  # an accept thread each
    }
    config = parse_config(raw, "test config")
    before = exporter_threads(emulator)
    daemon = Daemon(config, reload_config=lambda: config).start()
    try:
        service = daemon.service
        wait_for(lambda: service.poller.view().datastores[datastore].backfill_complete, 60)
        assert daemon.reload() is None
        emulator.backend.set_faults(Faults(latency_seconds=3.0))
        time.sleep(1.5)  # the next cycle's calls are in flight, and hang past the read timeout
        during = exporter_threads(emulator) - before
        assert any(t.name.startswith("poll") for t in during), during
        assert {"web_0", "web_1"} <= {t.name for t in during}, during
    finally:
        daemon.stop()
        emulator.backend.set_faults(Faults())
    left = {t for t in exporter_threads(emulator) - before if t.is_alive()}
    assert not left, sorted(t.name for t in left)


def test_run_on_the_main_thread_stops_on_a_signal_and_leaves_nothing(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """The signal path in-process: the handler only records, the main thread stops."""
    assert threading.current_thread() is threading.main_thread()
    config = parse_config(yaml.safe_load(tiny_config(emulator, tmp_path).read_text()), "test")
    before = exporter_threads(emulator)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}

    def on_started(daemon: Daemon) -> None:
        wait_for(daemon.service.is_ready)
        os.kill(os.getpid(), signal.SIGHUP)  # a reload, then a burst of stops
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
            os.kill(os.getpid(), signum)

    Daemon(config, reload_config=lambda: config).run(on_started)
    left = {t for t in exporter_threads(emulator) - before if t.is_alive()}
    assert not left, sorted(t.name for t in left)
    assert {s: signal.getsignal(s) for s in handlers} == handlers


def test_backfill_pages_run_without_a_thread_of_their_own(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """The backfill runs on its caller's thread (the runtime's job); listings on the pool."""
    datastore = emulator.backend.create_datastore(name="pages")
    emulator.backend.generate(datastore, 30, seed=2)
    raw = yaml.safe_load(tiny_config(emulator, tmp_path).read_text())
    raw["datastores"] = [{"datastore_id": datastore, "image_sets": "all"}]
    service = ExporterService(parse_config(raw, "test"))
    try:
        service.poll()
        before = exporter_threads(emulator)
        run_backfill(service, datastore)
        started = {t.name for t in exporter_threads(emulator) - before}
        assert started and all(name.startswith("backfill_") for name in started), started
    finally:
        service.close()
    assert not [t for t in threading.enumerate() if t.name.startswith(("backfill_", "poll_"))]


def test_jobs_longer_than_their_interval_run_quietly(
    emulator: EmulatorServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A backfill slice spans several of its 1 s fire times; the scheduler does not warn."""
    caplog.set_level(logging.INFO)
    datastore = emulator.backend.create_datastore(name="slow-backfill")
    emulator.backend.generate(datastore, 80, seed=4)
    raw = yaml.safe_load(tiny_config(emulator, tmp_path).read_text())
    raw["aws"]["rate_limits"] = {"ListImageSetVersions": 40, "SearchImageSets": 40}
    raw["poll"]["interval_seconds"] = 1
    raw["datastores"] = [{"datastore_id": datastore, "image_sets": "all"}]
    daemon = Daemon(parse_config(raw, "test")).start()
    try:
        poller = daemon.service.poller
        wait_for(lambda: poller.view().datastores[datastore].backfill_complete, 60)
        cycles = poller.completed_cycles
        wait_for(lambda: poller.completed_cycles > cycles)  # the schedule goes on
    finally:
        daemon.stop()
    messages = [r.getMessage() for r in caplog.records]
    skipped = [m for m in messages if "maximum number of running instances" in m]
    assert not skipped, skipped


def test_the_demo_stops_on_a_double_ctrl_c(tmp_path: Path) -> None:
    """`timeout 6 make demo` once ran for 10 minutes: a second signal deadlocked the stop."""
    log = tmp_path / "demo.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [EXPORTER, "demo", "--port", "0"], stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: "Press Ctrl-C to stop." in log.read_text(), timeout=60)
        process.send_signal(signal.SIGINT)
        time.sleep(0.001)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=EXIT_WITHIN_SECONDS) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert text.rstrip().endswith("stopped") and "Traceback" not in text, text
