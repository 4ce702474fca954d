"""deploy/cloudformation/events.yaml: cfn-lint passes, and it wires what the exporter needs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from exporter.emulator.events import DETAIL_TYPES

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "cloudformation" / "events.yaml"

try:  # cfn-lint is in the test extra; a missing one fails in CI (CI=true) and skips elsewhere
    from cfnlint.api import lint_all
    from cfnlint.decode import decode_str
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}:
        raise
    pytest.skip("cfn-lint is not installed (pip install -e .[test])", allow_module_level=True)


def template(text: str | None = None) -> dict[str, Any]:
    """The template as CloudFormation reads it (short-form tags such as !Ref expanded)."""
    decoded, problems = decode_str(TEMPLATE.read_text() if text is None else text)
    assert not problems, problems
    assert isinstance(decoded, dict)
    return decoded


def test_cfn_lint_finds_nothing_informational_checks_included() -> None:
    # The command users and CI run, from this interpreter's environment (the test extra).
    found = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or shutil.which(
        "cfn-lint"
    )
    assert found, "cfn-lint is installed with the test extra but has no command"
    done = subprocess.run(
        [found, "--include-checks", "I", "--", str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_cfn_lint_does_flag_a_broken_template() -> None:
    broken = TEMPLATE.read_text().replace("!GetAtt Queue.Arn", "!GetAtt Queue.Nope", 1)
    assert any(m.rule.id.startswith("E") for m in lint_all(broken))


def test_the_rule_forwards_the_healthimaging_events_the_exporter_reads() -> None:
    rule = template()["Resources"]["Rule"]["Properties"]
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.medical-imaging"]
    # Every detail-type of the EventBridge reference (as the emulator publishes them), once.
    assert sorted(pattern["detail-type"]) == sorted(DETAIL_TYPES)
    assert len(set(pattern["detail-type"])) == len(pattern["detail-type"])
    # The optional filter by data store: only when ids are given.
    assert pattern["detail"] == {
        "Fn::If": [
            "FiltersDatastores",
            {"datastoreId": {"Ref": "DatastoreIds"}},
            {"Ref": "AWS::NoValue"},
        ]
    }
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}


def test_the_queue_has_a_dead_letter_queue() -> None:
    resources = template()["Resources"]
    queue = resources["Queue"]["Properties"]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
        "maxReceiveCount": {"Ref": "MaxReceiveCount"},
    }
    assert queue["MessageRetentionPeriod"] == {"Ref": "MessageRetentionSeconds"}
    assert resources["DeadLetterQueue"]["Type"] == "AWS::SQS::Queue"
    assert "RedrivePolicy" not in resources["DeadLetterQueue"]["Properties"]
    for name in ("Queue", "DeadLetterQueue"):
        assert resources[name]["Properties"]["SqsManagedSseEnabled"] is True


def test_only_the_rule_may_send_to_the_queues() -> None:
    policy = template()["Resources"]["QueuePolicy"]["Properties"]
    assert policy["Queues"] == [{"Ref": "Queue"}, {"Ref": "DeadLetterQueue"}]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {
        "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["Rule", "Arn"]}}
    }


def test_parameters_and_outputs() -> None:
    decoded = template()
    parameters = decoded["Parameters"]
    assert parameters["DatastoreIds"]["Type"] == "CommaDelimitedList"
    assert parameters["DatastoreIds"]["Default"] == ""
    assert parameters["MessageRetentionSeconds"]["MaxValue"] == 1209600  # SQS's maximum
    # The default queue name is the one of the example IAM policy, deploy/iam/policy-events.json.
    assert parameters["QueueName"]["Default"] == "healthimaging-exporter-events"
    policy = (ROOT / "deploy" / "iam" / "policy-events.json").read_text()
    assert ":healthimaging-exporter-events" in policy
    outputs = decoded["Outputs"]
    assert outputs["QueueUrl"]["Value"] == {"Ref": "Queue"}
    assert outputs["QueueArn"]["Value"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    assert {"DeadLetterQueueUrl", "DeadLetterQueueArn", "RuleArn"} <= set(outputs)
