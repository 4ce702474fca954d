"""Load and validate the YAML configuration into frozen dataclasses; all errors in one line."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

import yaml

ALL = "all"
ID_PATTERN = re.compile(r"[0-9a-z]{32}")
ROLE_ARN_PATTERN = re.compile(r"arn:aws[a-zA-Z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")
REGION_PATTERN = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")
PER_IMAGE_SET_MODES = ("all", "failures_only", "none")
RATE_LIMITED_OPERATIONS = ("ListImageSetVersions", "SearchImageSets", "GetImageSet")
# Below the documented default quota of 25 requests/s per account and operation.
DEFAULT_RATE_LIMIT = 20.0

PerImageSet = Literal["all", "failures_only", "none"]
T = TypeVar("T")


class ConfigError(ValueError):
    """The configuration is invalid; the message is one line naming every bad field."""


@dataclass(frozen=True, slots=True)
class AwsSettings:
    """How to reach AWS HealthImaging."""

    region: str = "us-east-1"
    endpoint_url: str | None = None
    profile: str | None = None
    role_arn: str | None = None
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 20.0
    max_attempts: int = 5
    retry_mode: Literal["standard", "adaptive"] = "standard"
    rate_limits: Mapping[str, float] = field(
        default_factory=lambda: dict.fromkeys(RATE_LIMITED_OPERATIONS, DEFAULT_RATE_LIMIT)
    )


@dataclass(frozen=True, slots=True)
class PollSettings:
    """When and how hard to poll."""

    interval_seconds: float = 60.0
    concurrency: int = 8
    timeout_seconds: float | None = None  # a cycle's deadline; default: the interval

    @property
    def deadline_seconds(self) -> float:
        """Return the time one cycle may take before its unfinished calls are abandoned."""
        return self.timeout_seconds if self.timeout_seconds is not None else self.interval_seconds


@dataclass(frozen=True, slots=True)
class DatastoreSettings:
    """One data store to watch, with optional per-store AWS overrides."""

    datastore_id: str
    image_sets: tuple[str, ...] | Literal["all"]
    region: str | None = None
    role_arn: str | None = None

    @property
    def discovers_all(self) -> bool:
        """Tell whether every image set of the data store is tracked."""
        return self.image_sets == ALL


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    """How `image_sets: all` finds changes."""

    # Each search re-covers this much time before the cursor: clock skew and index lag.
    overlap_seconds: float = 300.0
    # A full re-listing of every tracked image set is spread over this period.
    reconcile_seconds: float = 86_400.0
    # Explicit lists longer than this use search-based change detection too.
    list_threshold: int = 500


@dataclass(frozen=True, slots=True)
class StateSettings:
    """Where the snapshot store lives."""

    path: str = "./state.db"


@dataclass(frozen=True, slots=True)
class WebSettings:
    """The HTTP server."""

    host: str = "127.0.0.1"
    port: int = 9890
    config_file: str | None = None

    @property
    def listen_address(self) -> str:
        """Return host:port as configured."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Which series to expose."""

    per_image_set: PerImageSet | None = None  # None: `all` for explicit lists, else failures_only

    def mode_for(self, datastore: DatastoreSettings) -> PerImageSet:
        """Return the per-image-set series mode that applies to a data store."""
        if self.per_image_set is not None:
            return self.per_image_set
        return "failures_only" if datastore.discovers_all else "all"


@dataclass(frozen=True, slots=True)
class Config:
    """The whole, validated configuration."""

    datastores: tuple[DatastoreSettings, ...]
    aws: AwsSettings = field(default_factory=AwsSettings)
    poll: PollSettings = field(default_factory=PollSettings)
    state: StateSettings = field(default_factory=StateSettings)
    web: WebSettings = field(default_factory=WebSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    shard: int = 0
    total_shards: int = 1

    def with_shard(self, shard: int | None, total_shards: int | None) -> Config:
        """Return the config with command-line shard flags applied and checked."""
        new = replace(
            self,
            shard=self.shard if shard is None else shard,
            total_shards=self.total_shards if total_shards is None else total_shards,
        )
        errors: list[str] = []
        _check_shards(new.shard, new.total_shards, errors)
        if errors:
            raise ConfigError("; ".join(errors))
        return new


class _Reader:
    """Walks a parsed YAML mapping, collecting every error instead of stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def mapping(self, value: object, where: str, known: tuple[str, ...]) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.errors.append(f"{where}: must be a mapping, got {_describe(value)}")
            return {}
        for key in value:
            if key not in known:
                self.errors.append(
                    f"{_join(where, str(key))}: unknown key (expected one of {', '.join(known)})"
                )
        return value

    def get(
        self,
        section: Mapping[str, Any],
        where: str,
        key: str,
        convert: Callable[[object], T],
        default: T,
    ) -> T:
        if key not in section or section[key] is None:
            return default
        try:
            return convert(section[key])
        except ValueError as exc:
            self.errors.append(f"{_join(where, key)}: {exc}")
            return default


def _join(where: str, key: str) -> str:
    name = key if key.isidentifier() else repr(key)
    return f"{where}.{name}" if where else name


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(minimum: float, maximum: float = math.inf) -> Callable[[object], float]:
    def convert(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ValueError(f"must be a number, got {_describe(value)}")
        if not minimum <= value <= maximum:
            bound = (
                f"between {minimum:g} and {maximum:g}" if maximum != math.inf else f">= {minimum:g}"
            )
            raise ValueError(f"must be {bound}, got {value:g}")
        return float(value)

    return convert


def _integer(minimum: int, maximum: int | None = None) -> Callable[[object], int]:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, got {_describe(value)}")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise ValueError(f"must be {bound}, got {value}")
        return value

    return convert


def _string(pattern: re.Pattern[str] | None = None, what: str = "") -> Callable[[object], str]:
    def convert(value: object) -> str:
        if not isinstance(value, str) or not value:
            raise ValueError(f"must be a non-empty string, got {_describe(value)}")
        if pattern is not None and not pattern.fullmatch(value):
            raise ValueError(f"must be {what}, got {_describe(value)}")
        return value

    return convert


def _choice(choices: tuple[str, ...]) -> Callable[[object], str]:
    def convert(value: object) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {_describe(value)}")
        return str(value)

    return convert


def _url(value: object) -> str:
    text = _string()(value)
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", text):
        raise ValueError(f"must be an http:// or https:// URL, got {_describe(value)}")
    return text.rstrip("/")


def _listen_address(value: object) -> tuple[str, int]:
    text = _string()(value)
    match = re.fullmatch(
        r"(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[^:\s]*)):(?P<port>\d{1,5})", text
    )
    if not match or int(match["port"]) > 65535:
        raise ValueError(f"must be host:port with a port from 0 to 65535, got {_describe(value)}")
    host = match["v6"] or match["host"] or "0.0.0.0"
    return host, int(match["port"])


def _identifier(value: object) -> str:
    # YAML reads an unquoted all-digit id (such as the AWS docs' example data store) as an
    # integer; that is fine unless leading zeros were lost, which the length check catches.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise ValueError(f"must be 32 characters of 0-9 and a-z (quote it), got {_describe(value)}")
    return value


_ID = _identifier
_REGION = _string(REGION_PATTERN, "an AWS region such as us-east-1")
_ROLE_ARN = _string(ROLE_ARN_PATTERN, "an IAM role ARN such as arn:aws:iam::123456789012:role/name")


def _check_shards(shard: int, total_shards: int, errors: list[str]) -> None:
    if total_shards < 1:
        errors.append(f"total_shards: must be >= 1, got {total_shards}")
    elif not 0 <= shard < total_shards:
        errors.append(
            f"shard: must be between 0 and total_shards - 1 ({total_shards - 1}), got {shard}"
        )


def _read_aws(r: _Reader, raw: object) -> AwsSettings:
    keys = (
        "region",
        "endpoint_url",
        "profile",
        "role_arn",
        "connect_timeout_seconds",
        "read_timeout_seconds",
        "max_attempts",
        "retry_mode",
        "rate_limits",
    )
    s = r.mapping(raw, "aws", keys)
    d = AwsSettings()
    limits_raw = r.mapping(s.get("rate_limits"), "aws.rate_limits", RATE_LIMITED_OPERATIONS)
    limits = {
        op: r.get(limits_raw, "aws.rate_limits", op, _number(0.1, 10_000), DEFAULT_RATE_LIMIT)
        for op in RATE_LIMITED_OPERATIONS
    }
    retry_mode: str = r.get(s, "aws", "retry_mode", _choice(("standard", "adaptive")), "standard")
    return AwsSettings(
        region=r.get(s, "aws", "region", _REGION, d.region),
        endpoint_url=r.get(s, "aws", "endpoint_url", _url, None),
        profile=r.get(s, "aws", "profile", _string(), None),
        role_arn=r.get(s, "aws", "role_arn", _ROLE_ARN, None),
        connect_timeout_seconds=r.get(
            s, "aws", "connect_timeout_seconds", _number(0.1, 600), d.connect_timeout_seconds
        ),
        read_timeout_seconds=r.get(
            s, "aws", "read_timeout_seconds", _number(0.1, 600), d.read_timeout_seconds
        ),
        max_attempts=r.get(s, "aws", "max_attempts", _integer(1, 20), d.max_attempts),
        retry_mode="adaptive" if retry_mode == "adaptive" else "standard",
        rate_limits=limits,
    )


def _read_poll(r: _Reader, raw: object) -> PollSettings:
    s = r.mapping(raw, "poll", ("interval_seconds", "concurrency", "timeout_seconds"))
    d = PollSettings()
    settings = PollSettings(
        interval_seconds=r.get(
            s, "poll", "interval_seconds", _number(1, 86_400), d.interval_seconds
        ),
        concurrency=r.get(s, "poll", "concurrency", _integer(1, 256), d.concurrency),
        timeout_seconds=r.get(s, "poll", "timeout_seconds", _number(1, 86_400), None),
    )
    return settings


def _image_sets(value: object) -> tuple[str, ...] | Literal["all"]:
    if value == ALL:
        return "all"
    if not isinstance(value, list) or not value:
        raise ValueError(
            f"must be a non-empty list of image set ids, or all; got {_describe(value)}"
        )
    ids = []
    for item in value:
        try:
            ids.append(_identifier(item))
        except ValueError:
            raise ValueError(
                f"{_describe(item)} is not an image set id (32 characters of 0-9 and a-z)"
            ) from None
    if len(set(ids)) != len(ids):
        raise ValueError("lists an image set more than once")
    return tuple(ids)


def _read_datastores(r: _Reader, raw: object) -> tuple[DatastoreSettings, ...]:
    if not isinstance(raw, list) or not raw:
        r.errors.append(f"datastores: must be a non-empty list, got {_describe(raw)}")
        return ()
    result: list[DatastoreSettings] = []
    for index, item in enumerate(raw):
        where = f"datastores[{index}]"
        s = r.mapping(item, where, ("datastore_id", "image_sets", "region", "role_arn"))
        if "datastore_id" not in s:
            r.errors.append(f"{where}.datastore_id: is required")
        if "image_sets" not in s:
            r.errors.append(f"{where}.image_sets: is required (a list of ids, or all)")
        result.append(
            DatastoreSettings(
                datastore_id=r.get(s, where, "datastore_id", _ID, ""),
                image_sets=r.get(s, where, "image_sets", _image_sets, ()),
                region=r.get(s, where, "region", _REGION, None),
                role_arn=r.get(s, where, "role_arn", _ROLE_ARN, None),
            )
        )
    ids = [d.datastore_id for d in result if d.datastore_id]
    for duplicate in sorted({i for i in ids if ids.count(i) > 1}):
        r.errors.append(f"datastores: lists data store {duplicate} more than once")
    return tuple(result)


def parse_config(data: object, source: str = "config") -> Config:
    """Validate parsed YAML; raise ConfigError naming every bad field in one line."""
    r = _Reader()
    top_keys = (
        "aws",
        "poll",
        "datastores",
        "state",
        "web",
        "metrics",
        "discovery",
        "shard",
        "total_shards",
    )
    top = r.mapping(data, "", top_keys)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: must be a YAML mapping with a datastores list")
    state = r.mapping(top.get("state"), "state", ("path",))
    web = r.mapping(top.get("web"), "web", ("listen_address", "config_file"))
    metrics = r.mapping(top.get("metrics"), "metrics", ("per_image_set",))
    discovery = r.mapping(
        top.get("discovery"),
        "discovery",
        ("overlap_seconds", "reconcile_seconds", "list_threshold"),
    )
    d = DiscoverySettings()
    host, port = r.get(web, "web", "listen_address", _listen_address, ("127.0.0.1", 9890))
    mode = r.get(metrics, "metrics", "per_image_set", _choice(PER_IMAGE_SET_MODES), None)
    shard = r.get(top, "", "shard", _integer(0), 0)
    total_shards = r.get(top, "", "total_shards", _integer(1), 1)
    _check_shards(shard, total_shards, r.errors)
    config = Config(
        aws=_read_aws(r, top.get("aws")),
        poll=_read_poll(r, top.get("poll")),
        datastores=_read_datastores(r, top.get("datastores")),
        state=StateSettings(path=r.get(state, "state", "path", _string(), "./state.db")),
        web=WebSettings(
            host=host, port=port, config_file=r.get(web, "web", "config_file", _string(), None)
        ),
        metrics=MetricsSettings(per_image_set=_as_mode(mode)),
        discovery=DiscoverySettings(
            overlap_seconds=r.get(
                discovery, "discovery", "overlap_seconds", _number(0, 86_400), d.overlap_seconds
            ),
            reconcile_seconds=r.get(
                discovery,
                "discovery",
                "reconcile_seconds",
                _number(60, 90 * 86_400),
                d.reconcile_seconds,
            ),
            list_threshold=r.get(
                discovery, "discovery", "list_threshold", _integer(1), d.list_threshold
            ),
        ),
        shard=shard,
        total_shards=total_shards,
    )
    if r.errors:
        raise ConfigError(f"{source}: " + "; ".join(r.errors))
    return config


def _as_mode(value: str | None) -> PerImageSet | None:
    if value == "all":
        return "all"
    if value == "failures_only":
        return "failures_only"
    if value == "none":
        return "none"
    return None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a YAML config file; raise ConfigError with a one-line message."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{name}: not valid YAML{where}: {problem}") from None
    return parse_config(data, name)
