"""The `healthimaging-exporter` command: the daemon, one poll, a config check, or the demo."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from exporter import __version__
from exporter.config import Config, ConfigError, load_config
from exporter.logs import FORMATS, LEVELS, configure_logging
from exporter.service import ExporterService
from exporter.store import StoreError
from exporter.web import WebApp, WebServer
from exporter.webconfig import BasicAuthChecker, WebConfigError, build_ssl_context, load_web_config

log = logging.getLogger("exporter")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
STOP_GRACE_SECONDS = 10.0


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
    return load_config(args.config).with_shard(args.shard, args.total_shards)


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
        print(f"{args.config}: ok ({len(config.datastores)} data stores)")
        return EXIT_OK
    try:
        if args.once:
            return run_once(config)
        return run_daemon(config, lambda: _load(args), args.enable_lifecycle)
    except (StoreError, WebConfigError, OSError) as exc:
        print(f"healthimaging-exporter: {exc}", file=sys.stderr)
        return EXIT_FAILED


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


def _safe_poll(service: ExporterService) -> None:
    try:
        service.poll()
    except Exception:
        # A bug in one pass must not stop the schedule; the next pass starts afresh.
        log.exception("poll cycle crashed; the next one will run on schedule")


def run_daemon(
    config: Config,
    reload_config: Callable[[], Config] | None = None,
    enable_lifecycle: bool = False,
    stop_event: threading.Event | None = None,
    ready: threading.Event | None = None,
) -> int:
    """Serve and poll on schedule until SIGTERM/SIGINT (or stop_event); reload on SIGHUP."""
    web_config = load_web_config(config.web.config_file)
    service = ExporterService(config, load_config=reload_config)
    stop = stop_event or threading.Event()
    reload_lock = threading.Lock()

    def reload() -> str | None:
        with reload_lock:
            error = service.reload()
        if error is None:
            _reschedule(scheduler, service.config)
        return error

    app = WebApp(
        exposition=service.cache,
        is_ready=service.is_ready,
        health=service.health,
        reload=reload if enable_lifecycle else None,
        authenticator=BasicAuthChecker(web_config.basic_auth_users),
    )
    try:
        server = WebServer(
            config.web.host, config.web.port, app, build_ssl_context(web_config)
        ).start()
    except OSError as exc:
        service.close()
        raise OSError(f"cannot listen on {config.web.listen_address}: {exc.strerror}") from None
    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.add_job(
        _safe_poll,
        IntervalTrigger(seconds=config.poll.interval_seconds, timezone=UTC),
        args=[service],
        id="poll",
        max_instances=1,  # polls never overlap
        coalesce=True,  # a slow cycle delays the next one instead of stacking
        misfire_grace_time=None,
        next_run_time=datetime.now(UTC),
    )
    scheduler.start()
    log.info("listening on %s/metrics", server.url)

    installed = _install_signals(stop, reload)
    if ready is not None:
        ready.set()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        log.info("stopping")
        service.stop()
        scheduler.shutdown(wait=True)
        server.stop()
        service.close()
        _restore_signals(installed)
        log.info("stopped")
    return EXIT_OK


def _reschedule(scheduler: BackgroundScheduler, config: Config) -> None:
    scheduler.reschedule_job(
        "poll", trigger=IntervalTrigger(seconds=config.poll.interval_seconds, timezone=UTC)
    )


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
