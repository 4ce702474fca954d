"""HealthImaging's EventBridge events, as an SQS target receives them, and their publisher.

Shapes follow the EventBridge reference for `aws.medical-imaging` and the HealthImaging
developer guide ("Using Amazon EventBridge with HealthImaging"): the envelope is `version`,
`id`, `detail-type`, `source`, `account`, `time`, `region`, `resources`, `detail`, and an SQS
target of an EventBridge rule receives exactly that JSON as the message body.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import math
import random
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

log = logging.getLogger("exporter.emulator")

SOURCE = "aws.medical-imaging"
IMAGING_VERSION = "1.0"

DATASTORE_DETAIL_TYPES: dict[str, str] = {
    "CREATING": "Data Store Creating",
    "ACTIVE": "Data Store Created",
    "CREATE_FAILED": "Data Store Creation Failed",
    "DELETING": "Data Store Deleting",
    "DELETED": "Data Store Deleted",
}
IMPORT_JOB_DETAIL_TYPES: dict[str, str] = {
    "SUBMITTED": "Import Job Submitted",
    "IN_PROGRESS": "Import Job In Progress",
    "COMPLETED": "Import Job Completed",
    "FAILED": "Import Job Failed",
}
# UPDATING_FOR_STUDY_CONSISTENCY, IMPORTING, IMPORTED and IMPORT_FAILED have no event in AWS.
IMAGE_SET_DETAIL_TYPES: dict[str, str] = {
    "CREATED": "Image Set Created",
    "COPYING": "Image Set Copying",
    "COPYING_WITH_READ_ONLY_ACCESS": "Image Set Copying With Read Only Access",
    "COPIED": "Image Set Copied",
    "COPY_FAILED": "Image Set Copy Failed",
    "UPDATING": "Image Set Updating",
    "UPDATED": "Image Set Updated",
    "UPDATE_FAILED": "Image Set Update Failed",
    "DELETING": "Image Set Deleting",
    "DELETED": "Image Set Deleted",
}
DETAIL_TYPES: tuple[str, ...] = (
    *DATASTORE_DETAIL_TYPES.values(),
    *IMPORT_JOB_DETAIL_TYPES.values(),
    *IMAGE_SET_DETAIL_TYPES.values(),
)


def event_time(epoch: float) -> str:
    """EventBridge's `time`: UTC, whole seconds, a Z suffix."""
    return dt.datetime.fromtimestamp(math.floor(epoch), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def envelope(
    detail_type: str,
    *,
    account: str,
    region: str,
    at: float,
    resources: list[str],
    detail: dict[str, Any],
) -> dict[str, Any]:
    """The EventBridge envelope around one `detail`."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": SOURCE,
        "account": account,
        "time": event_time(at),
        "region": region,
        "resources": resources,
        "detail": detail,
    }


@dataclass(frozen=True)
class EventSettings:
    """Where events go and how unreliably: an SQS queue URL, a drop ratio and a delay.

    `queue_url` None records events (see `Backend.recorded_events`) without sending them.
    `endpoint_url` is the SQS endpoint (moto's server in tests); None means the queue URL's
    own host. `seed` makes the drop decisions repeatable.
    """

    queue_url: str | None = None
    endpoint_url: str | None = None
    drop_ratio: float = 0.0
    delay_seconds: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        """Refuse settings that cannot mean anything, naming the field."""
        if not 0.0 <= self.drop_ratio <= 1.0:
            raise ValueError(f"drop_ratio must be between 0 and 1, got {self.drop_ratio!r}")
        if self.delay_seconds < 0:
            raise ValueError(f"delay_seconds must be >= 0, got {self.delay_seconds!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with the Python field names."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EventSettings:
        """Build from a JSON object; unknown keys and wrong types raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown event setting(s): {', '.join(unknown)}")
        for key, value in data.items():
            if value is None:
                continue
            if key in ("queue_url", "endpoint_url") and not isinstance(value, str):
                raise ValueError(f"{key} must be a string")
            if key == "seed" and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError("seed must be an integer")
            if key in ("drop_ratio", "delay_seconds") and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise ValueError(f"{key} must be a number")
        return cls(**{k: v for k, v in data.items() if v is not None})


@dataclass(frozen=True)
class RecordedEvent:
    """An event the emulator published, and whether the drop ratio swallowed it."""

    event: dict[str, Any]
    dropped: bool


def _sqs_client(settings: EventSettings, region: str) -> Any:
    import boto3  # the emulator's own client: it shares no code with exporter.aws

    return boto3.client(
        "sqs",
        endpoint_url=settings.endpoint_url,
        region_name=region,
        aws_access_key_id="emulator",
        aws_secret_access_key="emulator",
    )


class EventPublisher:
    """Records every event, drops some (seeded), and sends the rest to SQS after the delay."""

    RECORD_LIMIT = 10_000

    def __init__(self, settings: EventSettings, region: str) -> None:
        """Without a queue URL it only records."""
        self.settings = settings
        self._rng = random.Random(settings.seed)
        self._lock = threading.Lock()
        self._recorded: collections.deque[RecordedEvent] = collections.deque(
            maxlen=self.RECORD_LIMIT
        )
        self._counts = {"published": 0, "dropped": 0, "sent": 0, "send_failed": 0}
        self._client = _sqs_client(settings, region) if settings.queue_url is not None else None

    def publish(self, event: dict[str, Any]) -> str | None:
        """Record `event`; the message body to `send` later, or None if dropped or not sent."""
        with self._lock:
            dropped = bool(self.settings.drop_ratio) and self._rng.random() < (
                self.settings.drop_ratio
            )
            self._recorded.append(RecordedEvent(event, dropped))
            self._counts["published"] += 1
            if dropped:
                self._counts["dropped"] += 1
                return None
        if self._client is None:
            return None
        return json.dumps(event, separators=(",", ":"))

    def send(self, body: str) -> None:
        """Send one message body to the queue (on the outbox thread)."""
        if self._client is None:
            return
        try:
            self._client.send_message(QueueUrl=self.settings.queue_url, MessageBody=body)
        except Exception as exc:  # a dead queue must not stop the emulator: count, one line
            with self._lock:
                self._counts["send_failed"] += 1
            log.warning("event not sent to SQS: %s: %s", type(exc).__name__, exc)
            return
        with self._lock:
            self._counts["sent"] += 1

    def recorded(self) -> list[RecordedEvent]:
        """The last RECORD_LIMIT events published, oldest first."""
        with self._lock:
            return list(self._recorded)

    def counts(self) -> dict[str, int]:
        """Events published, dropped, sent to SQS and failed to send."""
        with self._lock:
            return dict(self._counts)
