"""The `healthimaging-exporter` command: the daemon, one poll, a config check, or the demo."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from exporter import __version__
from exporter.config import Config, ConfigError, load_config
from exporter.daemon import Daemon, ExtraJob
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
        return run_daemon(config, lambda: _load(args), args.enable_lifecycle)
    except (StoreError, WebConfigError, OSError) as exc:
        print(f"healthimaging-exporter: {exc}", file=sys.stderr)
        return EXIT_FAILED


def run_once(config: Config) -> int:
    """Poll once, print the text exposition, and exit 1 if any image set failed.

    The exposition is printed whatever happened: a failed poll shows as `healthimaging_up 0`.
    """
    service = ExporterService(config)
    ok = False
    try:
        try:
            ok = service.poll().ok
        except Exception as exc:  # the cycle is total; this is a last line of defence
            log.error("poll failed: internal error: %s: %s", type(exc).__name__, exc)
            log.debug("poll failed", exc_info=exc)
        sys.stdout.buffer.write(service.exposition().text)
        sys.stdout.flush()
    finally:
        service.close()
    return EXIT_OK if ok else EXIT_FAILED


def run_daemon(
    config: Config,
    reload_config: Callable[[], Config] | None = None,
    enable_lifecycle: bool = False,
    on_started: Callable[[Daemon], None] | None = None,
    extra_jobs: Sequence[ExtraJob] = (),
) -> int:
    """Serve and poll on schedule until SIGTERM/SIGINT; reload on SIGHUP."""
    daemon = Daemon(config, reload_config, enable_lifecycle, extra_jobs)
    # The process exits after this: late signals stay ignored rather than kill it mid-exit.
    daemon.run(on_started, restore_signals=False)
    return EXIT_OK
