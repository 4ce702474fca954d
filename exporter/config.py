"""Load and validate the YAML configuration into frozen dataclasses; all errors in one line."""

from __future__ import annotations

import math
import os
import re
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from exporter.configfile import (
    FieldReader,
    Invalid,
    YamlFileError,
    describe_value,
    join_path,
    parse_yaml,
    read_config_text,
)

ALL = "all"
ID_PATTERN = re.compile(r"[0-9a-z]{32}")
ROLE_ARN_PATTERN = re.compile(r"arn:aws[a-zA-Z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")
REGION_PATTERN = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")
PER_IMAGE_SET_MODES = ("all", "failures_only", "none")
RATE_LIMITED_OPERATIONS = (
    "ListImageSetVersions",
    "SearchImageSets",
    "GetImageSet",
    "GetDatastore",
    "ListDICOMImportJobs",
    "GetDICOMImportJob",
)
# Below the documented default quota of 25 requests/s per account and operation.
DEFAULT_RATE_LIMIT = 20.0
# Each below its operation's own quota where that is lower: GetDatastore and ListDICOMImportJobs
# have 10/s; a status check or an import-job check needs a handful of calls per cycle, so half
# of that is plenty.
DEFAULT_RATE_LIMITS: Mapping[str, float] = {
    **dict.fromkeys(RATE_LIMITED_OPERATIONS, DEFAULT_RATE_LIMIT),
    "GetDatastore": 5.0,
    "ListDICOMImportJobs": 5.0,
    "GetDICOMImportJob": 5.0,
}

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
    rate_limits: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
    # S3, for import job manifests (import_jobs.read_manifests); like endpoint_url, for tests
    # and VPC endpoints. Path-style addressing when set.
    s3_endpoint_url: str | None = None


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
    import_jobs: bool | None = None  # None: import_jobs.enabled decides

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
    # Each data store's status and name (GetDatastore) are read this often, in the first cycle
    # due; 0 never reads them (no status series, and `up` ignores the status).
    datastore_status_seconds: float = 300.0
    # On the first start of a state file, versions changed this long before it count as new
    # (None: two poll intervals when sharded, else 0); see Config.initial_lookback_seconds.
    initial_lookback_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class ImportJobSettings:
    """DICOM import jobs (issue 14): which data stores, how far back, how often to reconcile."""

    # On by default: two ListDICOMImportJobs calls per data store and cycle (0.03 requests/s
    # at a 60 s interval, against a 10/s quota) watch the other place data is lost.
    enabled: bool = True
    window_days: float = 7.0  # ended jobs counted in healthimaging_import_jobs
    reconcile_seconds: float = 86_400.0  # how often COMPLETED/FAILED are listed in full
    read_manifests: bool = False  # per-file counts from the jobs' output in S3

    def enabled_for(self, datastore: DatastoreSettings) -> bool:
        """Tell whether a data store's import jobs are watched."""
        return self.enabled if datastore.import_jobs is None else datastore.import_jobs

    @property
    def window_seconds(self) -> float:
        """Return the window of the ended jobs' gauge in seconds."""
        return self.window_days * 86_400.0


@dataclass(frozen=True, slots=True)
class StateSettings:
    """Where the snapshot store lives."""

    path: str = "./state.db"


DEFAULT_PORT = 9890
DEFAULT_TELEMETRY_PATH = "/metrics"
# Paths the web server answers itself: the metrics endpoint cannot take one of them.
RESERVED_PATHS = ("/", "/-/healthy", "/-/ready", "/-/reload")


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One address to serve on; an empty host means every interface, as `:9890` says."""

    host: str = ""
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class WebSettings:
    """The HTTP server: one or more listen addresses sharing one handler, TLS and limits."""

    listen_addresses: tuple[ListenAddress, ...] = (ListenAddress(),)
    config_file: str | None = None
    telemetry_path: str = DEFAULT_TELEMETRY_PATH
    disable_exporter_metrics: bool = False

    @property
    def host(self) -> str:
        """Return the first listen address's host ("" for every interface)."""
        return self.listen_addresses[0].host

    @property
    def port(self) -> int:
        """Return the first listen address's port."""
        return self.listen_addresses[0].port

    @property
    def listen_address(self) -> str:
        """Return the listen addresses as configured, comma-separated."""
        return ", ".join(str(address) for address in self.listen_addresses)


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Which series to expose."""

    per_image_set: PerImageSet | None = None  # None: `all` for explicit lists, else failures_only

    def mode_for(self, datastore: DatastoreSettings) -> PerImageSet:
        """Return the per-image-set series mode that applies to a data store."""
        if self.per_image_set is not None:
            return self.per_image_set
        return "failures_only" if datastore.discovers_all else "all"


FOREIGN_EVENT_ACTIONS = ("delete", "leave")
# The queue name may hold `{shard}`, replaced by this process's shard ordinal: one config for
# every pod of a sharded StatefulSet, one queue per shard.
SHARD_PLACEHOLDER = "{shard}"
QUEUE_URL_PATTERN = re.compile(
    r"https?://[^\s/]+/\d{12}/(?:[A-Za-z0-9_-]|\{shard\}){1,80}(\.fifo)?"
)


@dataclass(frozen=True, slots=True)
class EventsSettings:
    """HealthImaging's EventBridge events, read from an SQS queue (issue 15)."""

    queue_url: str
    region: str | None = None  # default: aws.region
    role_arn: str | None = None  # default: aws.role_arn
    endpoint_url: str | None = None  # default: the queue URL's own host (tests: moto)
    # Long poll of one ReceiveMessage; also the longest a stop waits for the consumer.
    wait_seconds: int = 5
    max_messages: int = 10
    # Events of data stores or image sets this process does not watch: with a queue of its
    # own (the recommended set-up, one per shard), delete; with a queue other consumers read, leave.
    foreign_events: Literal["delete", "leave"] = "delete"

    def queue_url_for(self, shard: int) -> str:
        """Return the queue URL with `{shard}` replaced by the shard ordinal."""
        return self.queue_url.replace(SHARD_PLACEHOLDER, str(shard))


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
    import_jobs: ImportJobSettings = field(default_factory=ImportJobSettings)
    events: EventsSettings | None = None
    shard: int = 0
    total_shards: int = 1

    @property
    def initial_lookback_seconds(self) -> float:
        """How far back a new state file's first sights count changes as new.

        A sharded process that starts with an empty state file is most often joining a running
        fleet (a scale-up): its image sets were watched by another process until a moment ago,
        so what changed while they moved must count. An unsharded first start is the first
        sight of the fleet: a baseline.
        """
        configured = self.discovery.initial_lookback_seconds
        if configured is not None:
            return configured
        return 2 * self.poll.interval_seconds if self.total_shards > 1 else 0.0

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

    def with_web(self, web: WebSettings) -> Config:
        """Return the config with other web settings (the command line's, see override_web)."""
        return replace(self, web=web)


def override_web(
    web: WebSettings,
    listen_addresses: Sequence[str] = (),
    config_file: str | None = None,
    telemetry_path: str | None = None,
    disable_exporter_metrics: bool = False,
) -> WebSettings:
    """Return the web settings with command-line flags applied: a flag given wins over YAML."""
    errors: list[str] = []

    def check(flag: str, convert: Callable[[object], T], value: object, default: T) -> T:
        try:
            return convert(value)
        except Invalid as exc:
            errors.append(f"{flag}: {exc.problem}, got {value!r}")
            return default

    addresses = web.listen_addresses
    if listen_addresses:
        parsed = tuple(
            check("--web.listen-address", parse_listen_address, text, ListenAddress())
            for text in listen_addresses
        )
        try:
            addresses = distinct_addresses(parsed)
        except Invalid as exc:
            errors.append(f"--web.listen-address: {exc.problem}")
    if config_file == "":
        errors.append("--web.config.file: must be a file path")
    path = web.telemetry_path
    if telemetry_path is not None:
        path = check("--web.telemetry-path", parse_telemetry_path, telemetry_path, path)
    if errors:
        raise ConfigError("; ".join(errors))
    return replace(
        web,
        listen_addresses=addresses,
        config_file=config_file if config_file is not None else web.config_file,
        telemetry_path=path,
        disable_exporter_metrics=disable_exporter_metrics or web.disable_exporter_metrics,
    )


def _number(minimum: float, maximum: float = math.inf) -> Callable[[object], float]:
    def convert(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise Invalid("must be a number")
        if not minimum <= value <= maximum:
            bound = (
                f"between {minimum:g} and {maximum:g}" if maximum != math.inf else f">= {minimum:g}"
            )
            raise Invalid(f"must be {bound}")
        return float(value)

    return convert


def _integer(minimum: int, maximum: int | None = None) -> Callable[[object], int]:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid("must be an integer")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise Invalid(f"must be {bound}")
        return value

    return convert


def _string(
    pattern: re.Pattern[str] | None = None, what: str = "a non-empty string"
) -> Callable[[object], str]:
    def convert(value: object) -> str:
        if not isinstance(value, str) or not value:
            raise Invalid(f"must be {what}")
        if pattern is not None and not pattern.fullmatch(value):
            raise Invalid(f"must be {what}")
        return value

    return convert


def _choice(choices: tuple[str, ...]) -> Callable[[object], str]:
    def convert(value: object) -> str:
        if value not in choices:
            raise Invalid(f"must be one of {', '.join(choices)}")
        return str(value)

    return convert


def _url(value: object) -> str:
    what = "an http:// or https:// URL such as http://127.0.0.1:4566"
    text = _string(what=what)(value)
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", text):
        raise Invalid(f"must be {what}")
    try:
        # What botocore does with it: a bracket left open or a port out of range raises here.
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise Invalid(f"must be {what}") from None
    if not parts.hostname:
        raise Invalid(f"must be {what}")
    return text.rstrip("/")


LISTEN_ADDRESS_FORM = (
    "host:port or :port with a port from 0 to 65535, such as :9890 or 127.0.0.1:9890"
)


def parse_listen_address(value: object) -> ListenAddress:
    """Parse `host:port`, `[v6]:port` or `:port` (every interface), as exporter-toolkit does."""
    if not isinstance(value, str):
        raise Invalid(f"must be {LISTEN_ADDRESS_FORM} (quoted)")
    match = re.fullmatch(
        r"(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[^:\s\[\]]*)):(?P<port>\d{1,5})", value
    )
    if not match or int(match["port"]) > 65535:
        raise Invalid(f"must be {LISTEN_ADDRESS_FORM}")
    return ListenAddress(match["v6"] or match["host"] or "", int(match["port"]))


def _listen_addresses(value: object) -> tuple[ListenAddress, ...]:
    # A string, or a list of them: the YAML twin of the repeatable --web.listen-address.
    if isinstance(value, list):
        if not value:
            raise Invalid(f"must be {LISTEN_ADDRESS_FORM}, or a non-empty list of them")
        return distinct_addresses(tuple(parse_listen_address(item) for item in value))
    return (parse_listen_address(value),)


def distinct_addresses(addresses: tuple[ListenAddress, ...]) -> tuple[ListenAddress, ...]:
    """Refuse an address listed twice (port 0, a new free port each time, may repeat)."""
    fixed = [address for address in addresses if address.port != 0]
    if len(set(fixed)) != len(fixed):
        raise Invalid("lists an address more than once")
    return addresses


def parse_telemetry_path(value: object) -> str:
    """Check a metrics path: absolute, no query, space or fragment, not another endpoint's."""
    what = "a path such as /metrics (starting with /, no spaces, ? or #)"
    if not isinstance(value, str) or not re.fullmatch(r"/[^\s?#]*", value):
        raise Invalid(f"must be {what}")
    if value in RESERVED_PATHS:
        raise Invalid(f"must not be {value}, which the exporter serves already")
    return value


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid("must be true or false")
    return value


def _identifier(value: object) -> str:
    # YAML reads an unquoted all-digit id (such as the AWS docs' example data store) as an
    # integer; that is fine unless leading zeros were lost, which the length check catches.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise Invalid("must be 32 characters of 0-9 and a-z (quote it)")
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


def _read_aws(r: FieldReader, raw: object) -> AwsSettings:
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
        "s3_endpoint_url",
    )
    s = r.mapping(raw, "aws", keys)
    d = AwsSettings()
    limits_raw = r.mapping(s.get("rate_limits"), "aws.rate_limits", RATE_LIMITED_OPERATIONS)
    limits = {
        op: r.get(limits_raw, "aws.rate_limits", op, _number(0.1, 10_000), DEFAULT_RATE_LIMITS[op])
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
        s3_endpoint_url=r.get(s, "aws", "s3_endpoint_url", _url, None),
    )


def _read_import_jobs(r: FieldReader, raw: object) -> ImportJobSettings:
    keys = ("enabled", "window_days", "reconcile_seconds", "read_manifests")
    s = r.mapping(raw, "import_jobs", keys)
    d = ImportJobSettings()
    return ImportJobSettings(
        enabled=r.get(s, "import_jobs", "enabled", _boolean, d.enabled),
        window_days=r.get(s, "import_jobs", "window_days", _number(0.01, 366), d.window_days),
        reconcile_seconds=r.get(
            s, "import_jobs", "reconcile_seconds", _number(60, 90 * 86_400), d.reconcile_seconds
        ),
        read_manifests=r.get(s, "import_jobs", "read_manifests", _boolean, d.read_manifests),
    )


def _queue_url(value: object) -> str:
    what = "an SQS queue URL such as https://sqs.us-east-1.amazonaws.com/123456789012/name"
    text = _string(what=what)(value)
    if not QUEUE_URL_PATTERN.fullmatch(text):
        raise Invalid(f"must be {what}")
    return _url(text)


def _read_events(r: FieldReader, raw: object) -> EventsSettings | None:
    if raw is None:
        return None
    keys = (
        "queue_url",
        "region",
        "role_arn",
        "endpoint_url",
        "wait_seconds",
        "max_messages",
        "foreign_events",
    )
    s = r.mapping(raw, "events", keys)
    if not isinstance(raw, Mapping):
        return None
    if s.get("queue_url") is None:
        r.error("events.queue_url", "is required when events is set")
    d = EventsSettings(queue_url="")
    foreign = r.get(s, "events", "foreign_events", _choice(FOREIGN_EVENT_ACTIONS), "delete")
    return EventsSettings(
        queue_url=r.get(s, "events", "queue_url", _queue_url, ""),
        region=r.get(s, "events", "region", _REGION, None),
        role_arn=r.get(s, "events", "role_arn", _ROLE_ARN, None),
        endpoint_url=r.get(s, "events", "endpoint_url", _url, None),
        # SQS's own bounds: a long poll of at most 20 s, at most 10 messages per receive.
        wait_seconds=r.get(s, "events", "wait_seconds", _integer(1, 20), d.wait_seconds),
        max_messages=r.get(s, "events", "max_messages", _integer(1, 10), d.max_messages),
        foreign_events="leave" if foreign == "leave" else "delete",
    )


def _read_poll(r: FieldReader, raw: object) -> PollSettings:
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


def _read_image_sets(
    r: FieldReader, section: Mapping[str, Any], where: str
) -> tuple[str, ...] | Literal["all"]:
    value = section.get("image_sets")
    where = join_path(where, "image_sets")
    if value is None:
        r.error(where, "is required (a list of ids, or all)")
        return ()
    if value == ALL:
        return "all"
    if not isinstance(value, list) or not value:
        r.error(where, "must be a non-empty list of image set ids, or all", value, show_value=True)
        return ()
    ids = [
        r.convert(item, f"{where}[{index}]", _identifier, "") for index, item in enumerate(value)
    ]
    if len(set(ids)) != len(ids):
        r.error(where, "lists an image set more than once")
    return tuple(i for i in ids if i)


def _read_datastores(r: FieldReader, raw: object) -> tuple[DatastoreSettings, ...]:
    if not isinstance(raw, list) or not raw:
        r.error("datastores", "must be a non-empty list", raw, show_value=True)
        return ()
    result: list[DatastoreSettings] = []
    for index, item in enumerate(raw):
        where = f"datastores[{index}]"
        s = r.mapping(
            item, where, ("datastore_id", "image_sets", "region", "role_arn", "import_jobs")
        )
        if not isinstance(item, Mapping):
            continue
        if s.get("datastore_id") is None:
            r.error(f"{where}.datastore_id", "is required")
        result.append(
            DatastoreSettings(
                datastore_id=r.get(s, where, "datastore_id", _ID, ""),
                image_sets=_read_image_sets(r, s, where),
                region=r.get(s, where, "region", _REGION, None),
                role_arn=r.get(s, where, "role_arn", _ROLE_ARN, None),
                import_jobs=r.get(s, where, "import_jobs", _boolean, None),
            )
        )
    ids = [d.datastore_id for d in result if d.datastore_id]
    counts = Counter(ids)
    for duplicate in sorted(i for i, n in counts.items() if n > 1):
        r.error("datastores", f"lists data store {duplicate} more than once")
    return tuple(result)


def parse_config(data: object, source: str = "config") -> Config:
    """Validate parsed YAML; raise ConfigError naming every bad field in one line."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: must be a YAML mapping with a datastores list, got {describe_value(data)}"
        )
    r = FieldReader(source)
    top_keys = (
        "aws",
        "poll",
        "datastores",
        "state",
        "web",
        "metrics",
        "discovery",
        "import_jobs",
        "events",
        "shard",
        "total_shards",
    )
    top = r.mapping(data, "", top_keys)
    state = r.mapping(top.get("state"), "state", ("path",))
    web = r.mapping(
        top.get("web"),
        "web",
        ("listen_address", "config_file", "telemetry_path", "disable_exporter_metrics"),
    )
    metrics = r.mapping(top.get("metrics"), "metrics", ("per_image_set",))
    discovery = r.mapping(
        top.get("discovery"),
        "discovery",
        (
            "overlap_seconds",
            "reconcile_seconds",
            "list_threshold",
            "datastore_status_seconds",
            "initial_lookback_seconds",
        ),
    )
    d = DiscoverySettings()
    mode = r.get(metrics, "metrics", "per_image_set", _choice(PER_IMAGE_SET_MODES), None)
    shard = r.get(top, "", "shard", _integer(0), 0)
    total_shards = r.get(top, "", "total_shards", _integer(1), 1)
    _check_shards(shard, total_shards, r.errors)
    config = Config(
        aws=_read_aws(r, top.get("aws")),
        poll=_read_poll(r, top.get("poll")),
        datastores=_read_datastores(r, top.get("datastores")),
        state=StateSettings(
            path=r.get(state, "state", "path", _string(what="a file path"), "./state.db")
        ),
        web=WebSettings(
            listen_addresses=r.get(
                web, "web", "listen_address", _listen_addresses, (ListenAddress(),)
            ),
            config_file=r.get(web, "web", "config_file", _string(), None),
            telemetry_path=r.get(
                web, "web", "telemetry_path", parse_telemetry_path, DEFAULT_TELEMETRY_PATH
            ),
            disable_exporter_metrics=r.get(web, "web", "disable_exporter_metrics", _boolean, False),
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
            datastore_status_seconds=r.get(
                discovery,
                "discovery",
                "datastore_status_seconds",
                _number(0, 86_400),
                d.datastore_status_seconds,
            ),
            initial_lookback_seconds=r.get(
                discovery, "discovery", "initial_lookback_seconds", _number(0, 86_400), None
            ),
        ),
        import_jobs=_read_import_jobs(r, top.get("import_jobs")),
        events=_read_events(r, top.get("events")),
        shard=shard,
        total_shards=total_shards,
    )
    if r.errors:
        raise ConfigError(r.message())
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
    """Read and validate a YAML config file; raise ConfigError, and only that, in one line."""
    name = os.fspath(path)
    try:
        text = read_config_text(name)
    except YamlFileError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return parse_config_text(text, name)


def parse_config_text(text: str, source: str = "config") -> Config:
    """Parse and validate YAML text; raise ConfigError, and only that, in one line."""
    try:
        data = parse_yaml(text)
    except YamlFileError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return parse_config(data, source)
