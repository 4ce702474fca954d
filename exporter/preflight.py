"""Start-up checks beyond the config file's own fields, shared by --check-config and the daemon.

A config that `--check-config` passes must not fail when the daemon starts: these checks look
at what the daemon will touch before its first poll (the AWS profile and endpoint as botocore
sees them, the state file, the web config, every listen address), without calling AWS and without
reading or logging credentials.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket

from exporter.config import Config, ConfigError, ListenAddress
from exporter.configfile import MAX_ERRORS_SHOWN
from exporter.store import MEMORY
from exporter.web import bind_socket, bind_target
from exporter.webconfig import WebConfigError, build_ssl_context, load_web_config

__all__ = ["PreflightError", "check_aws", "check_startup"]

_SQLITE_HEADER = b"SQLite format 3\x00"


class PreflightError(ConfigError):
    """The daemon would fail to start with this config; one line naming every problem."""


def _problems_of_aws(config: Config) -> list[str]:
    # botocore is imported here, not at module level: the check-config path needs it only for
    # these two questions, and neither makes a call or resolves credentials.
    import botocore.exceptions
    import botocore.session
    from botocore.utils import is_valid_endpoint_url, is_valid_ipv6_endpoint_url

    problems: list[str] = []
    url = config.aws.endpoint_url
    if url is not None:
        try:
            accepted = is_valid_endpoint_url(url) or is_valid_ipv6_endpoint_url(url)
        except ValueError:
            accepted = False
        if not accepted:
            problems.append(f"aws.endpoint_url: botocore does not accept {url[:80]!r}")
    try:
        # What boto3.Session(profile_name=...) does: read the profile from the AWS config files
        # (AWS_PROFILE applies when no profile is set), raising ProfileNotFound if it is absent.
        botocore.session.Session(profile=config.aws.profile).get_scoped_config()
    except botocore.exceptions.ProfileNotFound as exc:
        setting = "aws.profile" if config.aws.profile is not None else "AWS_PROFILE"
        problems.append(f"{setting}: {exc}")
    except botocore.exceptions.BotoCoreError as exc:
        problems.append(f"AWS config files: {exc}")
    return problems


def _problems_of_state(path: str) -> list[str]:
    if path == MEMORY:
        return []
    where = f"state.path {path}"
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return [f"{where}: is a directory, not a file"]
    if not os.path.isdir(directory):
        return [f"{where}: directory {directory} does not exist"]
    if not os.access(directory, os.W_OK | os.X_OK):
        # SQLite writes its -wal and -shm files next to the database.
        return [f"{where}: directory {directory} is not writable"]
    if not os.path.exists(path):
        return []
    if not os.path.isfile(path):
        return [f"{where}: is not a regular file"]
    if not os.access(path, os.R_OK | os.W_OK):
        return [f"{where}: is not readable and writable"]
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(_SQLITE_HEADER))
    except OSError as exc:
        return [f"{where}: cannot read: {exc.strerror or type(exc).__name__}"]
    if header and header != _SQLITE_HEADER:
        return [f"{where}: is not an SQLite database"]
    return []


def _problems_of_web_config(config: Config) -> list[str]:
    try:
        build_ssl_context(load_web_config(config.web.config_file))
    except WebConfigError as exc:
        return [str(exc)]
    return []


def _problems_of_listen_addresses(config: Config) -> list[str]:
    # The same family, stacks and reuse flag as the daemon's servers (exporter/web.py), so a
    # port in TIME_WAIT passes and a port another process listens on fails, as it will at start.
    # The probes stay bound until all are tried, so the same port listed twice (say :9890 and
    # 127.0.0.1:9890) fails too.
    problems: list[str] = []
    bound: list[ListenAddress] = []
    with contextlib.ExitStack() as probes:
        for address in config.web.listen_addresses:
            target = bind_target(address.host)
            try:
                probe = probes.enter_context(socket.socket(target.family, socket.SOCK_STREAM))
                bind_socket(probe, target, address.port)
                probe.listen()
                bound.append(address)
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                if exc.errno == errno.EADDRINUSE:
                    same_port = [str(other) for other in bound if other.port == address.port]
                    reason += (
                        f" (by {same_port[0]}, listed before it)"
                        if same_port
                        else " (by another process, such as an exporter already running)"
                    )
                problems.append(f"web.listen_address {address}: cannot listen: {reason}")
    return problems


def _raise_if_any(source: str, problems: list[str]) -> None:
    if problems:
        shown = "; ".join(problems[:MAX_ERRORS_SHOWN])
        more = len(problems) - MAX_ERRORS_SHOWN
        raise PreflightError(f"{source}: {shown}" + (f"; and {more} more" if more > 0 else ""))


def check_aws(config: Config, source: str = "config") -> None:
    """Check the AWS endpoint and profile as botocore will see them; cheap, no network."""
    _raise_if_any(source, _problems_of_aws(config))


def check_startup(config: Config, source: str = "config", listen: bool = True) -> None:
    """Check everything the daemon needs before its first poll; raise PreflightError if not.

    `listen` binds the listen address briefly: only while the daemon is not running yet.
    """
    problems = _problems_of_aws(config)
    problems += _problems_of_state(config.state.path)
    problems += _problems_of_web_config(config)
    if listen:
        problems += _problems_of_listen_addresses(config)
    _raise_if_any(source, problems)
