"""`healthimaging-exporter demo`: the emulator with demo data and the exporter against it."""

from __future__ import annotations

import argparse
import itertools
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporter.config import (
    AwsSettings,
    Config,
    DatastoreSettings,
    ListenAddress,
    PollSettings,
    StateSettings,
    WebSettings,
)
from exporter.emulator import EmulatorServer
from exporter.logs import configure_logging

if TYPE_CHECKING:
    from exporter.daemon import Daemon

DEMO_DATASTORE = "12345678901234567890123456789012"
ACTIVITY = ("UPDATED", "UPDATED", "UPDATED", "COPIED", "COPY_FAILED", "UPDATE_FAILED")
# The image set the demo opens with: its copy is under way (COPYING) in the demo data.
WATCHED_IMAGE_SET = "f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2"
EVENT_SECONDS = 10.0


@dataclass(frozen=True)
class DemoEvent:
    """A version the demo adds: when (seconds after it starts), where, and what."""

    at: float
    image_set: str
    status: str
    forced: bool


def demo_schedule(image_sets: Sequence[str], seed: int = 7) -> Iterator[DemoEvent]:
    """The demo's versions in order, forever.

    It opens with what people watch a demo for: the watched image set's copy fails, then a
    forced update of it, both within 30 s, so that a minute of watching shows an alert's cause.
    Random activity over all image sets follows.
    """
    watched = WATCHED_IMAGE_SET if WATCHED_IMAGE_SET in image_sets else image_sets[0]
    at = EVENT_SECONDS
    yield DemoEvent(at, watched, "COPY_FAILED", forced=False)
    at += EVENT_SECONDS
    yield DemoEvent(at, watched, "UPDATED", forced=True)
    rng = random.Random(seed)
    while True:
        at += 2 * EVENT_SECONDS
        yield DemoEvent(at, rng.choice(image_sets), rng.choice(ACTIVITY), rng.random() < 0.2)


def announcement(emulator_url: str, port: int, image_sets: Sequence[str]) -> str:
    """What the demo prints once the exporter is ready: where to look and what to watch."""
    opening = list(itertools.islice(demo_schedule(image_sets), 2))
    watched = opening[0].image_set
    when = ", then ".join(
        f"{e.status}{' (forced)' if e.forced else ''} at {e.at:.0f} s" for e in opening
    )
    return (
        f"\nemulator:  {emulator_url}\n"
        f"metrics:   http://127.0.0.1:{port}/metrics\n"
        f"watch:     image set {watched} gets {when}:\n"
        f"           curl -s http://127.0.0.1:{port}/metrics | grep {watched}\n"
        "Press Ctrl-C to stop.\n"
    )


def _demo_image_sets(server: EmulatorServer) -> tuple[str, ...]:
    store = server.backend.store(DEMO_DATASTORE)
    return tuple(sorted(store.image_sets))


# How often the runtime calls the activity job: the schedule's own times are kept to this.
ACTIVITY_TICK_SECONDS = 1.0


class Activity:
    """Adds demo_schedule's versions to the emulator as their time comes (a job of the runtime)."""

    def __init__(
        self,
        server: EmulatorServer,
        image_sets: Sequence[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._server = server
        self._clock = clock
        self._started = clock()
        self._schedule = demo_schedule(image_sets)
        self._next = next(self._schedule)

    def __call__(self) -> None:
        elapsed = self._clock() - self._started
        while self._next.at <= elapsed:
            event, self._next = self._next, next(self._schedule)
            self._add(event)

    def _add(self, event: DemoEvent) -> None:
        try:
            version = self._server.backend.add_version(
                DEMO_DATASTORE, event.image_set, event.status, forced=event.forced
            )
        except Exception as exc:  # a deleted demo image set, say: keep the demo going
            print(f"demo: could not add a version to {event.image_set}: {exc}", file=sys.stderr)
            return
        extra = " (forced)" if event.forced else ""
        print(
            f"demo: image set {event.image_set} got version {version}: {event.status}{extra}",
            flush=True,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="healthimaging-exporter demo",
        description="Run the exporter against the built-in emulator with demo data.",
    )
    parser.add_argument("--port", type=int, default=9890, help="exporter port (default 9890)")
    parser.add_argument("--interval", type=float, default=5.0, help="poll interval in seconds")
    args = parser.parse_args(argv)
    configure_logging("info")
    # The emulator accepts any SigV4 signature; never sign its requests with real credentials.
    os.environ.update(
        AWS_ACCESS_KEY_ID="demo", AWS_SECRET_ACCESS_KEY="demo", AWS_SESSION_TOKEN="demo"
    )
    os.environ.pop("AWS_PROFILE", None)
    from exporter.cli import run_daemon  # after the environment is set

    with EmulatorServer(port=0, dataset="demo") as emulator, tempfile.TemporaryDirectory() as tmp:
        image_sets = _demo_image_sets(emulator)
        config = Config(
            aws=AwsSettings(endpoint_url=emulator.url),
            poll=PollSettings(interval_seconds=args.interval),
            datastores=(DatastoreSettings(DEMO_DATASTORE, image_sets),),
            state=StateSettings(path=os.path.join(tmp, "state.db")),
            # Loopback only: the demo is for the person at this machine.
            web=WebSettings(listen_addresses=(ListenAddress("127.0.0.1", args.port),)),
        )

        def announce(daemon: Daemon) -> None:
            print(announcement(emulator.url, args.port, image_sets), flush=True)

        activity = ("demo activity", Activity(emulator, image_sets), ACTIVITY_TICK_SECONDS)
        try:
            return run_daemon(config, on_started=announce, extra_jobs=[activity])
        except OSError as exc:
            print(f"healthimaging-exporter demo: {exc} (try --port)", file=sys.stderr)
            return 1
