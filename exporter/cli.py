"""The `healthimaging-exporter` command: the daemon, one poll, a config check, or the demo."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from exporter import __version__
from exporter.config import Config, ConfigError, load_config
from exporter.daemon import Daemon
from exporter.logs import FORMATS, LEVELS, configure_logging
from exporter.preflight import PreflightError, check_aws, check_startup
from exporter.service import ExporterService
from exporter.store import StoreError
from exporter.webconfig import WebConfigError

log = logging.getLogger("exporter")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="healthimaging-exporter",
        description="Prometheus exporter for AWS HealthImaging image set versions. "
        "Run `healthimaging-exporter demo` to try it against the built-in emulator.",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML config file")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="poll once, print metrics, exit")
    mode.add_argument("--check-config", action="store_true", help="validate the config and exit")
    parser.add_argument("--shard", type=int, help="this process's shard (overrides the config)")
    parser.add_argument("--total-shards", type=int, help="number of shards (overrides the config)")
    parser.add_argument(
        "--web.enable-lifecycle",
        dest="enable_lifecycle",
        action="store_true",
        help="allow POST /-/reload",
    )
    parser.add_argument("--log-level", choices=LEVELS, default="info")
    parser.add_argument("--log-format", choices=FORMATS, default="plain")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config).with_shard(args.shard, args.total_shards)
    check_aws(config, args.config)  # at start and on reload, as --check-config does
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["demo"]:
        from exporter.demo import main as demo_main  # the emulator is only needed here

        return demo_main(arguments[1:])
    parser = _parser()
    args = parser.parse_args(arguments)
    configure_logging(args.log_level, args.log_format)
    if not args.config:
        parser.error("--config FILE is required (or run: healthimaging-exporter demo)")
    try:
        config = _load(args)
    except ConfigError as exc:
        print(f"healthimaging-exporter: invalid config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.check_config:
        try:
            check_startup(config, args.config)
        except PreflightError as exc:
            print(f"healthimaging-exporter: invalid config: {exc}", file=sys.stderr)
            return EXIT_USAGE
        count = len(config.datastores)
        print(f"{args.config}: ok ({count} data store{'' if count == 1 else 's'})")
        return EXIT_OK
    try:
        if args.once:
            return run_once(config)
        code = run_daemon(config, lambda: _load(args), args.enable_lifecycle)
    except (StoreError, WebConfigError, OSError) as exc:
        print(f"healthimaging-exporter: {exc}", file=sys.stderr)
        return EXIT_FAILED
    _exit_without_stuck_calls(code)
    return code


def _exit_without_stuck_calls(code: int) -> None:
    """Exit at once if abandoned AWS calls are still in flight; all state is committed."""
    # Waiting for them (up to read timeout x attempts) would outlast a container's grace period.
    busy = [
        t for t in threading.enumerate() if t is not threading.current_thread() and t.is_alive()
    ]
    # concurrent.futures joins its workers at exit even when they are daemon threads.
    if busy:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_once(config: Config) -> int:
    """Poll once, print the text exposition, and exit 1 if any image set failed."""
    service = ExporterService(config)
    try:
        result = service.poll()
        sys.stdout.buffer.write(service.exposition().text)
        sys.stdout.flush()
    finally:
        service.close()
    return EXIT_OK if result.ok else EXIT_FAILED


def run_daemon(
    config: Config,
    reload_config: Callable[[], Config] | None = None,
    enable_lifecycle: bool = False,
    ready: threading.Event | None = None,
) -> int:
    """Serve and poll on schedule until SIGTERM/SIGINT; reload on SIGHUP."""
    daemon = Daemon(config, reload_config, enable_lifecycle)
    stop = threading.Event()
    # Before start() logs "listening on": from then on a SIGHUP or SIGTERM must find its
    # handler, not the default action that kills the process.
    installed = _install_signals(stop, daemon.reload)
    try:
        daemon.start()
        if ready is not None:
            ready.set()
        while not stop.wait(1.0):
            pass
    finally:
        daemon.stop()
        _restore_signals(installed)
    return EXIT_OK


def _install_signals(stop: threading.Event, reload: Callable[[], object]) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}  # in-process tests stop through stop_event

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        # Off the signal handler: reloading takes locks the interrupted code may hold.
        threading.Thread(target=reload, name="reload", daemon=True).start()

    previous: dict[int, Any] = {}
    for signum, handler in (
        (signal.SIGTERM, on_stop),
        (signal.SIGINT, on_stop),
        (signal.SIGHUP, on_hup),
    ):
        previous[signum] = signal.signal(signum, handler)
    return previous


def _restore_signals(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
