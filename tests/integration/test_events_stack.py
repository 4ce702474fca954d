"""deploy/cloudformation/events.yaml deployed into moto's standalone server: events reach the queue.

moto runs the template's resources for real (CloudFormation, the EventBridge rule and its SQS
target, the queues): an event put on the default bus arrives in the queue when it is a
HealthImaging event of a forwarded data store, and only then.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from exporter.emulator.events import DETAIL_TYPES
from tests.moto import MotoServer

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "cloudformation" / "events.yaml"
WATCHED, OTHER = "a" * 32, "c" * 32


def deploy(moto: MotoServer, name: str, **parameters: str) -> dict[str, str]:
    """Create a stack of the template; return its outputs."""
    cfn = moto.client("cloudformation")
    cfn.create_stack(
        StackName=name,
        TemplateBody=TEMPLATE.read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )
    (stack,) = cfn.describe_stacks(StackName=name)["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


def put(moto: MotoServer, datastore_id: str, detail_type: str, source: str) -> None:
    answer = moto.client("events").put_events(
        Entries=[
            {
                "Source": source,
                "DetailType": detail_type,
                "Detail": json.dumps({"datastoreId": datastore_id, "imagesetId": "b" * 32}),
            }
        ]
    )
    assert answer["FailedEntryCount"] == 0


def received(moto: MotoServer, queue_url: str) -> list[dict[str, Any]]:
    """Every event in the queue (the message bodies: EventBridge's whole envelope)."""
    sqs = moto.client("sqs")
    events: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        if not messages:
            return events
        for message in messages:
            events.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def test_a_filtered_stack_forwards_healthimaging_events_of_its_data_stores_only(
    moto_server: MotoServer,
) -> None:
    outputs = deploy(moto_server, "filtered", DatastoreIds=WATCHED)
    for detail_type in DETAIL_TYPES:
        put(moto_server, WATCHED, detail_type, "aws.medical-imaging")
    put(moto_server, OTHER, "Image Set Copy Failed", "aws.medical-imaging")  # not forwarded
    put(moto_server, WATCHED, "Image Set Copy Failed", "aws.s3")  # another source
    put(moto_server, WATCHED, "Image Set Exploded", "aws.medical-imaging")  # not a known type
    events = received(moto_server, outputs["QueueUrl"])
    assert sorted(e["detail-type"] for e in events) == sorted(DETAIL_TYPES)
    assert {e["source"] for e in events} == {"aws.medical-imaging"}
    assert {e["detail"]["datastoreId"] for e in events} == {WATCHED}


def test_an_unfiltered_stack_forwards_every_data_store_and_has_a_dead_letter_queue(
    moto_server: MotoServer,
) -> None:
    outputs = deploy(moto_server, "shard-1", QueueName="healthimaging-exporter-events-1")
    assert outputs["QueueUrl"].endswith("/healthimaging-exporter-events-1")
    assert outputs["DeadLetterQueueArn"].endswith(":healthimaging-exporter-events-1-dlq")
    put(moto_server, WATCHED, "Image Set Copy Failed", "aws.medical-imaging")
    put(moto_server, OTHER, "Import Job Failed", "aws.medical-imaging")
    events = received(moto_server, outputs["QueueUrl"])
    assert {e["detail"]["datastoreId"] for e in events} == {WATCHED, OTHER}
    attributes = moto_server.client("sqs").get_queue_attributes(
        QueueUrl=outputs["QueueUrl"], AttributeNames=["All"]
    )["Attributes"]
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": outputs["DeadLetterQueueArn"],
        "maxReceiveCount": 5,
    }
    assert (attributes["MessageRetentionPeriod"], attributes["VisibilityTimeout"]) == (
        "345600",
        "60",
    )
    assert attributes["QueueArn"] == outputs["QueueArn"]
    rule = outputs["RuleArn"].rsplit("/", 1)[1]
    (target,) = moto_server.client("events").list_targets_by_rule(Rule=rule)["Targets"]
    assert target["Arn"] == outputs["QueueArn"]
    assert target["DeadLetterConfig"] == {"Arn": outputs["DeadLetterQueueArn"]}
