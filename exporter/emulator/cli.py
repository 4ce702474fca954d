"""The healthimaging-emulator console script: serve until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from .errors import DatasetError
from .server import EmulatorServer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="healthimaging-emulator",
        description="Local emulator of the AWS HealthImaging image-set API for tests and demos.",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--data", metavar="FILE", help="YAML or JSON dataset (default: the shipped demo data)"
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    return parser


def startup_lines(url: str, region: str) -> list[str]:
    """What the emulator prints once listening: its URL, then how to point the exporter at it."""
    # The emulator checks no signature, but botocore refuses to send a request it cannot sign:
    # without these a first run fails with "no AWS credentials found".
    return [
        f"healthimaging-emulator listening on {url}",
        "  it accepts any credentials, but the AWS SDK needs some to sign requests: export "
        f"AWS_ACCESS_KEY_ID=emulator AWS_SECRET_ACCESS_KEY=emulator AWS_DEFAULT_REGION={region}",
        f'  exporter config: aws: {{region: {region}, endpoint_url: "{url}"}}',
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the emulator in the foreground; prints its URL once ready, exits 0 on SIGINT/SIGTERM."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        server = EmulatorServer(
            args.host, args.port, args.data if args.data else "demo", verbose=args.verbose
        )
        server.start()
    except (DatasetError, OSError) as exc:
        print(f"healthimaging-emulator: error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print("\n".join(startup_lines(server.url, server.backend.region)), flush=True)
        # A timed wait keeps the main thread responsive to signals on every platform.
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
