"""The `healthimaging-exporter` command: the daemon, one poll, a config check, or the demo."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from exporter import __version__
from exporter.config import Config, ConfigError, load_config, override_web
from exporter.daemon import Daemon, ExtraJob
from exporter.logs import configure_logging, parse_format, parse_level
from exporter.preflight import PreflightError, check_aws, check_startup
from exporter.service import ExporterService
from exporter.store import StoreError
from exporter.webconfig import WebConfigError

log = logging.getLogger("exporter")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


# Spellings kept for one release beside exporter-toolkit's; each says so once when used.
DEPRECATED_FLAGS = {"--log-level": "--log.level", "--log-format": "--log.format"}


class _DeprecatedFlag(argparse.Action):
    """Stores like the new flag, and notes the old spelling for one warning line."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        used: list[str] = getattr(namespace, "deprecated_flags", None) or []
        if option_string is not None and option_string not in used:
            used.append(option_string)
        namespace.deprecated_flags = used


def _argument_type(parse: Callable[[str], str], name: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name  # argparse names the type in its error line
    return convert


def build_parser() -> argparse.ArgumentParser:
    """Return the command line's parser (exporter-toolkit's flag spellings, old ones hidden)."""
    parser = argparse.ArgumentParser(
        prog="healthimaging-exporter",
        description="Prometheus exporter for AWS HealthImaging image set versions. "
        "Run `healthimaging-exporter demo` to try it against the built-in emulator. "
        "A web or log flag given wins over the config file's setting.",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML config file")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="poll once, print metrics, exit")
    mode.add_argument("--check-config", action="store_true", help="validate the config and exit")
    parser.add_argument("--shard", type=int, help="this process's shard (overrides the config)")
    parser.add_argument("--total-shards", type=int, help="number of shards (overrides the config)")
    parser.add_argument(
        "--web.listen-address",
        dest="listen_addresses",
        action="append",
        metavar="ADDRESS",
        help="address to serve on, host:port or :port; repeat it to serve on several "
        "(default: web.listen_address, else :9890)",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="exporter-toolkit web config: TLS, basic auth, headers (default: web.config_file)",
    )
    parser.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        metavar="PATH",
        help="path of the metrics endpoint (default: web.telemetry_path, else /metrics)",
    )
    parser.add_argument(
        "--web.disable-exporter-metrics",
        dest="disable_exporter_metrics",
        action="store_true",
        help="leave out metrics about the process itself (process_*, python_gc_*, python_info)",
    )
    parser.add_argument(
        "--web.enable-lifecycle",
        dest="enable_lifecycle",
        action="store_true",
        help="allow POST /-/reload",
    )
    level = _argument_type(parse_level, "log level")
    fmt = _argument_type(parse_format, "log format")
    parser.add_argument(
        "--log.level",
        dest="log_level",
        type=level,
        default="info",
        metavar="LEVEL",
        help="debug, info, warn (warning) or error; any case (default: info)",
    )
    parser.add_argument(
        "--log.format",
        dest="log_format",
        type=fmt,
        default="plain",
        metavar="FORMAT",
        help="plain or json (default: plain)",
    )
    parser.add_argument(
        "--log-level", dest="log_level", type=level, action=_DeprecatedFlag, help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--log-format", dest="log_format", type=fmt, action=_DeprecatedFlag, help=argparse.SUPPRESS
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def load_with_flags(args: argparse.Namespace) -> Config:
    """Load the config file and apply the command line's shard and web flags (they win)."""
    config = load_config(args.config).with_shard(args.shard, args.total_shards)
    web = override_web(
        config.web,
        args.listen_addresses or (),
        args.web_config_file,
        args.telemetry_path,
        args.disable_exporter_metrics,
    )
    config = config.with_web(web)
    check_aws(config, args.config)  # at start and on reload, as --check-config does
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["demo"]:
        from exporter.demo import main as demo_main  # the emulator is only needed here

        return demo_main(arguments[1:])
    parser = build_parser()
    args = parser.parse_args(arguments)
    configure_logging(args.log_level, args.log_format)
    for old in getattr(args, "deprecated_flags", None) or ():
        log.warning(
            "flag %s is deprecated and goes in the next release: use %s",
            old,
            DEPRECATED_FLAGS[old],
        )
    if not args.config:
        parser.error("--config FILE is required (or run: healthimaging-exporter demo)")
    try:
        config = load_with_flags(args)
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
        return run_daemon(config, lambda: load_with_flags(args), args.enable_lifecycle)
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
