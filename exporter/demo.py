"""`healthimaging-exporter demo`: the emulator with demo data and the exporter against it."""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING

from exporter.config import (
    AwsSettings,
    Config,
    DatastoreSettings,
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


def _demo_image_sets(server: EmulatorServer) -> tuple[str, ...]:
    store = server.backend.store(DEMO_DATASTORE)
    return tuple(sorted(store.image_sets))


ACTIVITY_EVERY_SECONDS = 20.0


class Activity:
    """Adds a version to a random demo image set, so counters move (a job of the runtime)."""

    def __init__(self, server: EmulatorServer, image_sets: Sequence[str]) -> None:
        self._server = server
        self._image_sets = image_sets
        self._rng = random.Random(7)

    def __call__(self) -> None:
        image_set = self._rng.choice(self._image_sets)
        status = self._rng.choice(ACTIVITY)
        forced = self._rng.random() < 0.2
        try:
            version = self._server.backend.add_version(
                DEMO_DATASTORE, image_set, status, forced=forced
            )
        except Exception as exc:  # a deleted demo image set, say: keep the demo going
            print(f"demo: could not add a version to {image_set}: {exc}", file=sys.stderr)
            return
        extra = " (forced)" if forced else ""
        print(f"demo: image set {image_set} got version {version}: {status}{extra}", flush=True)


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
            web=WebSettings(host="127.0.0.1", port=args.port),
        )

        def announce(daemon: Daemon) -> None:
            print(
                f"\nemulator:  {emulator.url}\n"
                f"metrics:   {daemon.url}/metrics\n"
                "Press Ctrl-C to stop.\n",
                flush=True,
            )

        activity = ("demo activity", Activity(emulator, image_sets), ACTIVITY_EVERY_SECONDS)
        try:
            return run_daemon(config, on_started=announce, extra_jobs=[activity])
        except OSError as exc:
            print(f"healthimaging-exporter demo: {exc} (try --port)", file=sys.stderr)
            return 1
