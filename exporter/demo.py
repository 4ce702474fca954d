"""`healthimaging-exporter demo`: the emulator with demo data and the exporter against it."""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
from collections.abc import Sequence

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

DEMO_DATASTORE = "12345678901234567890123456789012"
ACTIVITY = ("UPDATED", "UPDATED", "UPDATED", "COPIED", "COPY_FAILED", "UPDATE_FAILED")


def _demo_image_sets(server: EmulatorServer) -> tuple[str, ...]:
    store = server.backend.store(DEMO_DATASTORE)
    return tuple(sorted(store.image_sets))


def _activity(server: EmulatorServer, image_sets: Sequence[str], stop: threading.Event) -> None:
    """Add a version to a random demo image set every few seconds, so counters move."""
    rng = random.Random(7)
    while not stop.wait(20):
        image_set = rng.choice(image_sets)
        status = rng.choice(ACTIVITY)
        forced = rng.random() < 0.2
        try:
            version = server.backend.add_version(DEMO_DATASTORE, image_set, status, forced=forced)
        except Exception as exc:  # a deleted demo image set, say: keep the demo going
            print(f"demo: could not add a version to {image_set}: {exc}", file=sys.stderr)
            continue
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
        stop = threading.Event()
        ready = threading.Event()
        threading.Thread(
            target=_activity, args=(emulator, image_sets, stop), name="demo", daemon=True
        ).start()

        def announce() -> None:
            if ready.wait(30):
                print(
                    f"\nemulator:  {emulator.url}\n"
                    f"metrics:   http://127.0.0.1:{args.port}/metrics\n"
                    "Press Ctrl-C to stop.\n",
                    flush=True,
                )

        threading.Thread(target=announce, daemon=True).start()
        try:
            return run_daemon(config, ready=ready)
        except OSError as exc:
            print(f"healthimaging-exporter demo: {exc} (try --port)", file=sys.stderr)
            return 1
        finally:
            stop.set()
