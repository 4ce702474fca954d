"""deploy/iam: least-privilege policies, linted by parliament."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from parliament import analyze_policy_string, iam_definition

ROOT = Path(__file__).resolve().parents[2]
IAM = ROOT / "deploy" / "iam"
DATASTORE = (
    "arn:aws:medical-imaging:us-east-1:123456789012:datastore/12345678901234567890123456789012"
)
READ_ACTIONS = {
    "medical-imaging:ListImageSetVersions",
    "medical-imaging:GetImageSet",
    "medical-imaging:SearchImageSets",
    "medical-imaging:ListDatastores",
    "medical-imaging:GetDatastore",
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


def test_policy_allows_exactly_the_read_actions() -> None:
    actions = {a for s in statements("policy.json") for a in as_list(s["Action"])}
    assert actions == READ_ACTIONS
    assert all(s["Effect"] == "Allow" for s in statements("policy.json"))
    service = next(s for s in iam_definition if s["prefix"] == "medical-imaging")
    levels = {p["privilege"]: p["access_level"] for p in service["privileges"]}
    for action in actions:
        assert levels[action.split(":", 1)[1]] in {"Read", "List"}, action


def test_policy_covers_every_operation_the_exporter_calls() -> None:
    called = set()
    for source in (ROOT / "exporter").glob("*.py"):
        called |= set(re.findall(r"_call\(\s*\"([A-Z]\w+)\"", source.read_text()))
    actions = {a for s in statements("policy.json") for a in as_list(s["Action"])}
    assert {f"medical-imaging:{op}" for op in called} <= actions


def test_only_list_datastores_gets_a_wildcard_resource() -> None:
    service = next(s for s in iam_definition if s["prefix"] == "medical-imaging")
    scoped = {
        p["privilege"]
        for p in service["privileges"]
        if any(r["resource_type"] for r in p["resource_types"])
    }
    for statement in statements("policy.json"):
        resources = as_list(statement["Resource"])
        for action in as_list(statement["Action"]):
            if action.split(":", 1)[1] in scoped:
                assert "*" not in resources, action
                assert all(r == DATASTORE or r == f"{DATASTORE}/imageset/*" for r in resources)
            else:
                assert action == "medical-imaging:ListDatastores"
                assert resources == ["*"]


def test_parliament_does_flag_a_broken_policy() -> None:
    text = (IAM / "policy.json").read_text()
    typo = text.replace('medical-imaging:GetImageSet"', 'medical-imaging:GetImageSets"')
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
