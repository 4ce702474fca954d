"""The SQS queue HealthImaging's events arrive on: receive, delete, queue depth; typed, total.

Every method returns plain data or raises ApiError (the same outcomes as HealthImaging calls);
message bodies are handed on unread (exporter.aws.events parses them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from exporter.aws.client import _translated
from exporter.aws.errors import malformed

# SQS's ApproximateNumberOfMessages* attributes, by the `state` label value they become.
QUEUE_ATTRIBUTES = {
    "visible": "ApproximateNumberOfMessages",
    "in_flight": "ApproximateNumberOfMessagesNotVisible",
    "delayed": "ApproximateNumberOfMessagesDelayed",
}


@dataclass(frozen=True, slots=True)
class QueueMessage:
    """One received message: its body (unparsed) and what deleting it takes."""

    message_id: str
    receipt_handle: str
    body: str | None  # None: the answer carried no text body (a malformed message)


class EventQueue:
    """A thin, typed wrapper around one boto3 SQS client and one queue URL."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self.queue_url = queue_url

    def receive(self, max_messages: int, wait_seconds: int) -> list[QueueMessage]:
        """Long-poll for up to `max_messages` messages, waiting at most `wait_seconds`."""
        with _translated("ReceiveMessage"):
            answer = self._client.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=max_messages,
                WaitTimeSeconds=wait_seconds,
            )
        return read_messages(answer)

    def delete(self, messages: Sequence[QueueMessage]) -> int:
        """Delete messages (at most 10); return how many SQS refused to delete."""
        if not messages:
            return 0
        entries = [
            {"Id": str(index), "ReceiptHandle": m.receipt_handle}
            for index, m in enumerate(messages)
        ]
        with _translated("DeleteMessageBatch"):
            answer = self._client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        failed = answer.get("Failed") if isinstance(answer, Mapping) else None
        return len(failed) if isinstance(failed, list) else 0

    def depth(self) -> dict[str, int]:
        """Return the queue's approximate message counts by state (QUEUE_ATTRIBUTES)."""
        with _translated("GetQueueAttributes"):
            answer = self._client.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=list(QUEUE_ATTRIBUTES.values())
            )
        attributes = answer.get("Attributes") if isinstance(answer, Mapping) else None
        if not isinstance(attributes, Mapping):
            raise malformed("GetQueueAttributes: Attributes is missing")
        counts: dict[str, int] = {}
        for state, name in QUEUE_ATTRIBUTES.items():
            value = attributes.get(name)
            if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
                counts[state] = int(value)
        return counts


def read_messages(answer: object) -> list[QueueMessage]:
    """Return a ReceiveMessage answer's messages; refuse an answer that is not one."""
    if not isinstance(answer, Mapping):
        raise malformed("ReceiveMessage: the answer is not an object")
    items = answer.get("Messages")
    if items is None:
        return []
    if not isinstance(items, list):
        raise malformed("ReceiveMessage: Messages is not a list")
    messages = []
    for item in items:
        if not isinstance(item, Mapping):
            raise malformed("ReceiveMessage: a message is not an object")
        handle = item.get("ReceiptHandle")
        if not isinstance(handle, str) or not handle:
            raise malformed("ReceiveMessage: a message has no ReceiptHandle")
        message_id = item.get("MessageId")
        body = item.get("Body")
        messages.append(
            QueueMessage(
                message_id=message_id if isinstance(message_id, str) else "",
                receipt_handle=handle,
                body=body if isinstance(body, str) else None,
            )
        )
    return messages
