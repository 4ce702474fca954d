"""deploy/iam: least-privilege policies, linted by parliament."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore import xform_name
from parliament import analyze_policy_string, iam_definition

ROOT = Path(__file__).resolve().parents[2]
IAM = ROOT / "deploy" / "iam"
ACCOUNT_REGION = "arn:aws:medical-imaging:us-east-1:123456789012"
DATASTORE_ID = "12345678901234567890123456789012"
# The AWS boundary: every module of the exporter but the emulator, which shares no code with it.
EXPORTER_SOURCES = sorted(
    p for p in (ROOT / "exporter").rglob("*.py") if "emulator" not in p.relative_to(ROOT).parts
)
# The optional policies: each grants exactly these actions, on one resource of its service.
OPTIONAL_POLICIES = {
    "policy-import-manifests.json": ("s3", {"s3:GetObject"}),
    "policy-events.json": (
        "sqs",
        {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"},
    ),
}
# Findings parliament reports on a file that are expected, each with its justification.
JUSTIFIED = {
    "assume-role-policy.json": {
        # sts:AssumeRole returns credentials, which is the point: the exporter assumes the role
        # named by a config's role_arn. The statement is scoped to that one role ARN.
        ("CREDENTIALS_EXPOSURE", ""),
    },
    "trust-policy-irsa.json": {
        # A trust policy names no Resource: the role it is attached to is the resource.
        ("MALFORMED", "Statement contains neither Resource nor NotResource"),
        # parliament knows a fixed list of federation providers; EKS's per-cluster OIDC issuers
        # are not on it.
        (
            "UNKNOWN_FEDERATION_SOURCE",
            "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/"
            "EXAMPLED539D4633E53DE1B71EXAMPLE",
        ),
    },
    "trust-policy-pod-identity.json": {
        # A trust policy names no Resource: the role it is attached to is the resource.
        ("MALFORMED", "Statement contains neither Resource nor NotResource"),
    },
}


def findings(text: str) -> set[tuple[str, str]]:
    """Parliament's findings, community auditors included, as (issue, detail) pairs."""
    policy = analyze_policy_string(text, include_community_auditors=True)
    return {(f.issue, str(f.detail)) for f in policy.findings}


def statements(name: str) -> list[dict[str, Any]]:
    """The statements of a policy file."""
    document = json.loads((IAM / name).read_text())
    assert document["Version"] == "2012-10-17"
    result = document["Statement"]
    assert isinstance(result, list)
    return result


def as_list(value: str | list[str]) -> list[str]:
    """An IAM string-or-list field as a list."""
    return [value] if isinstance(value, str) else value


@pytest.mark.parametrize("name", sorted(p.name for p in IAM.glob("*.json")))
def test_parliament_finds_nothing_unjustified(name: str) -> None:
    assert findings((IAM / name).read_text()) == JUSTIFIED.get(name, set())


def service_operations() -> dict[str, str]:
    """Every operation of botocore's medical-imaging model, by its client method name too."""
    model = botocore.session.get_session().get_service_model("medical-imaging")
    names = {name: name for name in model.operation_names}
    names.update({xform_name(name): name for name in model.operation_names})
    return names


def operations_called_in(source: str) -> set[str]:
    """The medical-imaging operations a piece of code calls.

    A call counts when it is a client method named after an operation
    (`client.list_image_set_versions(...)`, `api.search_image_sets(...)`) or when it passes an
    operation's name as an argument (`self._pages("ListImageSetVersions", ...)`,
    `client.get_paginator("list_image_set_versions")`). Names in tables that are not calls
    (result keys, metric label values) do not count.
    """
    known = service_operations()
    called: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Attribute) and node.func.attr in known:
            called.add(known[node.func.attr])
        for argument in [*node.args, *(k.value for k in node.keywords)]:
            if isinstance(argument, ast.Constant) and argument.value in known:
                called.add(known[argument.value])
    return called


def operations_the_exporter_calls() -> set[str]:
    """The medical-imaging operations called anywhere in the exporter (emulator aside)."""
    called: set[str] = set()
    for path in EXPORTER_SOURCES:
        called |= operations_called_in(path.read_text())
    return called


def actions(name: str) -> set[str]:
    """Every action a policy file allows."""
    return {a for s in statements(name) for a in as_list(s["Action"])}


def medical_imaging_definition() -> dict[str, Any]:
    """Parliament's copy of the Service Authorization Reference for AWS HealthImaging."""
    found = next(s for s in iam_definition if s["prefix"] == "medical-imaging")
    assert isinstance(found, dict)
    return found


def test_the_scan_sees_calls_and_ignores_tables() -> None:
    code = """
api.list_image_set_versions(datastoreId=d, imageSetId=i)
self._page("SearchImageSets", params, token)
client.get_paginator("get_image_set")
RESULT_KEYS = {"GetDatastore": "datastoreProperties"}
metrics.labels(operation="ListDatastores")
"""
    assert operations_called_in(code) == {
        "ListImageSetVersions",
        "SearchImageSets",
        "GetImageSet",
        "ListDatastores",  # a keyword argument naming an operation counts too: better too many
    }
    assert operations_called_in("OPERATIONS = ('GetDatastore', 'ListDatastores')") == set()


def test_the_exporter_calls_what_it_polls_with() -> None:
    # The two operations README.md names; the policy test below is only as good as this scan.
    assert {"ListImageSetVersions", "SearchImageSets"} <= operations_the_exporter_calls()


def test_policy_allows_exactly_the_operations_the_exporter_calls() -> None:
    called = {f"medical-imaging:{op}" for op in operations_the_exporter_calls()}
    allowed = actions("policy.json")
    assert allowed - called == set(), "allowed but never called: drop them"
    assert called - allowed == set(), "called but not allowed: the exporter would be denied"
    assert all(s["Effect"] == "Allow" for s in statements("policy.json"))
    levels = {p["privilege"]: p["access_level"] for p in medical_imaging_definition()["privileges"]}
    for action in allowed:
        assert levels[action.split(":", 1)[1]] in {"Read", "List"}, action


def test_the_exporter_reads_data_store_status() -> None:
    assert "GetDatastore" in operations_the_exporter_calls()
    assert "medical-imaging:GetDatastore" in actions("policy.json")


def operations_of(service: str) -> dict[str, str]:
    """Every operation of a botocore service model, by its name and its client method name."""
    model = botocore.session.get_session().get_service_model(service)
    names = {name: name for name in model.operation_names}
    names.update({xform_name(name): name for name in model.operation_names})
    return names


def calls_of(service: str, sources: list[str] | None = None) -> set[str]:
    """The IAM actions of `service` the exporter's calls need.

    Method calls named after one of the service's operations anywhere in the exporter (names it
    shares with medical-imaging, such as tag_resource, left out), each mapped to its action.
    """
    known = operations_of(service)
    shared = set(service_operations())
    called: set[str] = set()
    texts = sources if sources is not None else [p.read_text() for p in EXPORTER_SOURCES]
    for text in texts:
        for node in ast.walk(ast.parse(text)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in known
                and node.func.attr not in shared
            ):
                called.add(known[node.func.attr])
    return {action_of(service, f"{service}:{operation}") for operation in called}


def action_of(service: str, operation: str) -> str:
    """The IAM action that authorises an operation.

    SQS's batch calls are authorised by the single-message action (DeleteMessageBatch by
    sqs:DeleteMessage), as the SQS developer guide says; every other operation by its own name.
    """
    definition = next(s for s in iam_definition if s["prefix"] == service)
    privileges = {p["privilege"] for p in definition["privileges"]}
    name = operation.split(":", 1)[1]
    if name not in privileges and name.endswith("Batch"):
        name = name.removesuffix("Batch")
    assert name in privileges, f"{service}:{name} is no IAM action"
    return f"{service}:{name}"


def arn_format(fmt: str, last_may_be_wildcard: bool) -> re.Pattern[str]:
    """An ARN format of the Service Authorization Reference as a pattern.

    Each variable is filled without wildcards, but an object key may end in `/*` (a prefix).
    """
    parts = re.split(r"\$\{(\w+)\}", fmt)  # literal, name, literal, ...
    last = len(parts) - 2
    pattern = "".join(
        re.escape(part)
        if i % 2 == 0
        else r"[^*]+(?:/\*)?"
        if i == last and last_may_be_wildcard
        else r"[^*/:]+"
        for i, part in enumerate(parts)
    )
    return re.compile(pattern)


@pytest.mark.parametrize("name", sorted(OPTIONAL_POLICIES))
def test_optional_policies_grant_what_the_feature_calls_on_one_resource(name: str) -> None:
    service, granted = OPTIONAL_POLICIES[name]
    assert actions(name) == granted
    # Whatever the exporter's code calls of the service must be granted (the code reading
    # import manifests and consuming events comes from other branches: checked once merged).
    assert calls_of(service) <= granted


def test_the_scan_finds_sqs_and_s3_calls() -> None:
    code = """
answer = self._client.receive_message(QueueUrl=url, WaitTimeSeconds=5)
self._client.delete_message_batch(QueueUrl=url, Entries=entries)
body = s3.get_object(Bucket=b, Key=k)["Body"]
api.list_image_set_versions(datastoreId=d, imageSetId=i)
"""
    assert calls_of("sqs", [code]) == {"sqs:ReceiveMessage", "sqs:DeleteMessage"}
    assert calls_of("s3", [code]) == {"s3:GetObject"}


def test_batch_calls_need_the_single_message_action() -> None:
    assert action_of("sqs", "sqs:DeleteMessageBatch") == "sqs:DeleteMessage"
    assert action_of("sqs", "sqs:ReceiveMessage") == "sqs:ReceiveMessage"
    assert action_of("s3", "s3:GetObject") == "s3:GetObject"


def test_optional_policy_resources_are_the_queue_and_the_output_prefix() -> None:
    (events,) = statements("policy-events.json")
    assert as_list(events["Resource"]) == [
        "arn:aws:sqs:us-east-1:123456789012:healthimaging-exporter-events"
    ]
    (manifests,) = statements("policy-import-manifests.json")
    (resource,) = as_list(manifests["Resource"])
    bucket, _, prefix = resource.removeprefix("arn:aws:s3:::").partition("/")
    assert bucket and prefix.endswith("/*") and len(prefix) > 2  # a prefix, not the whole bucket


def test_role_assumption_is_allowed_exactly_when_the_exporter_assumes_roles() -> None:
    assumes = any("AssumeRoleCredentialFetcher" in p.read_text() for p in EXPORTER_SOURCES)
    assert assumes == ("sts:AssumeRole" in actions("assume-role-policy.json"))
    assert actions("assume-role-policy.json") <= {"sts:AssumeRole"}


def resource_patterns() -> dict[str, re.Pattern[str]]:
    """Each HealthImaging resource type's ARN format, filled in with this example's values."""
    values = {
        "Partition": "aws",
        "Region": "us-east-1",
        "Account": "123456789012",
        "DatastoreId": DATASTORE_ID,
    }
    patterns = {}
    for resource in medical_imaging_definition()["resources"]:
        parts = re.split(r"\$\{(\w+)\}", resource["arn"])  # literal, name, literal, ...
        pattern = "".join(
            re.escape(part)
            if i % 2 == 0
            else re.escape(values[part])
            if part in values
            else r"(?:[0-9a-z]{32}|\*)"  # one image set id, or all of the data store's
            for i, part in enumerate(parts)
        )
        patterns[resource["resource"]] = re.compile(pattern)
    return patterns


def test_every_action_gets_only_the_resources_it_requires() -> None:
    required = {
        p["privilege"]: {r["resource_type"].rstrip("*") for r in p["resource_types"]}
        for p in medical_imaging_definition()["privileges"]
    }
    patterns = resource_patterns()
    for statement in statements("policy.json"):
        resources = as_list(statement["Resource"])
        assert "*" not in resources
        assert all(r.startswith(ACCOUNT_REGION) for r in resources), resources
        for action in as_list(statement["Action"]):
            wanted = required[action.split(":", 1)[1]]
            assert "" not in wanted, f"{action} supports no resource scoping"
            # each resource is of a type the action requires, and each required type is there
            types = {t for r in resources for t, p in patterns.items() if p.fullmatch(r)}
            assert types == wanted, (action, resources)
            for resource in resources:
                assert any(patterns[t].fullmatch(resource) for t in wanted), (action, resource)


def test_parliament_does_flag_a_broken_policy() -> None:
    text = (IAM / "policy.json").read_text()
    typo = text.replace('medical-imaging:SearchImageSets"', 'medical-imaging:SearchImageSet"')
    assert any(issue == "UNKNOWN_ACTION" for issue, _ in findings(typo))
    # a data store action scoped to another service's resource
    mismatch = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "medical-imaging:GetDatastore",
                    "Resource": "arn:aws:s3:::healthimaging-exports/*",
                }
            ],
        }
    )
    assert any(issue == "RESOURCE_MISMATCH" for issue, _ in findings(mismatch))


def test_irsa_trust_policy_binds_the_service_account() -> None:
    (statement,) = statements("trust-policy-irsa.json")
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    conditions = statement["Condition"]["StringEquals"]
    sub = next(v for k, v in conditions.items() if k.endswith(":sub"))
    aud = next(v for k, v in conditions.items() if k.endswith(":aud"))
    assert sub == "system:serviceaccount:healthimaging-exporter:healthimaging-exporter"
    assert aud == "sts.amazonaws.com"
    provider = statement["Principal"]["Federated"].split("oidc-provider/", 1)[1]
    assert all(k.startswith(provider + ":") for k in conditions)


def test_pod_identity_trust_policy_binds_the_service_account() -> None:
    (statement,) = statements("trust-policy-pod-identity.json")
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    # EKS Pod Identity assumes the role with session tags: both actions are required.
    assert sorted(as_list(statement["Action"])) == ["sts:AssumeRole", "sts:TagSession"]
    conditions = statement["Condition"]["StringEquals"]
    assert conditions["aws:RequestTag/kubernetes-namespace"] == "healthimaging-exporter"
    assert conditions["aws:RequestTag/kubernetes-service-account"] == "healthimaging-exporter"
    assert "aws:RequestTag/eks-cluster-name" in conditions
    assert "aws:SourceAccount" in conditions
