"""Every `outcome` and `reason` label value the exporter exports, in one place."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """How a call, or the handling of one image set, ended.

    The first eight are what an AWS attempt can come to (the `outcome` label of
    `healthimaging_exporter_api_requests_total`); every member but `SUCCESS` is a `reason` of
    `healthimaging_exporter_poll_errors_total`.
    """

    SUCCESS = "success"
    THROTTLED = "throttled"
    ACCESS_DENIED = "access_denied"
    NOT_FOUND = "not_found"
    VALIDATION_ERROR = "validation_error"
    SERVER_ERROR = "server_error"
    NETWORK_ERROR = "network_error"
    MALFORMED_RESPONSE = "malformed_response"
    # Not AWS's answers but the cycle's: the deadline passed before the call could be made,
    TIMEOUT = "timeout"
    # the data store refused access earlier in the same cycle, so the call was not made,
    SKIPPED = "skipped"
    # the data store's status (GetDatastore) is not ACTIVE: its image sets cannot be read,
    DATASTORE_NOT_ACTIVE = "datastore_not_active"
    # the snapshot store could not be written,
    STATE_ERROR = "state_error"
    # or a bug: an unexpected exception while handling one image set.
    INTERNAL_ERROR = "internal_error"


API_OUTCOMES: tuple[Outcome, ...] = (
    Outcome.SUCCESS,
    Outcome.THROTTLED,
    Outcome.ACCESS_DENIED,
    Outcome.NOT_FOUND,
    Outcome.VALIDATION_ERROR,
    Outcome.SERVER_ERROR,
    Outcome.NETWORK_ERROR,
    Outcome.MALFORMED_RESPONSE,
)
POLL_ERROR_REASONS: tuple[Outcome, ...] = tuple(o for o in Outcome if o is not Outcome.SUCCESS)


class EventOutcome(StrEnum):
    """How one received event message ended: the `outcome` label of events_received_total."""

    # An image set event whose listing changed what the exporter knew (deleted from the queue),
    APPLIED = "applied"
    # one whose listing changed nothing: a duplicate, reordered or late event (deleted),
    DUPLICATE = "duplicate"
    # a data store or import job event, counted and noted (deleted),
    NOTED = "noted"
    # an event for a data store or image set this process does not watch (left or deleted,
    # as events.foreign_events says),
    IGNORED_FOREIGN = "ignored_foreign"
    # a body that is not a HealthImaging event (deleted),
    MALFORMED = "malformed"
    # or an image set event whose listing failed: left on the queue, redelivered later.
    FAILED = "failed"


# reason of healthimaging_exporter_event_receive_errors_total: the AWS outcome of a failed
# ReceiveMessage, DeleteMessageBatch or GetQueueAttributes call, or `delete_refused` when SQS
# answered but refused to delete some messages.
EVENT_RECEIVE_ERROR_REASONS: tuple[str, ...] = (
    *(o.value for o in API_OUTCOMES if o is not Outcome.SUCCESS),
    Outcome.INTERNAL_ERROR.value,
    "delete_refused",
)
