"""Shared test set-up: dummy AWS credentials so nothing ever signs with a real account's keys."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.moto import MotoServer


@pytest.fixture(autouse=True)
def dummy_aws_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Point boto3 at fake credentials and an empty config, whatever the developer's machine has."""
    home = tmp_path_factory.mktemp("aws-home")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.fspath(home / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.fspath(home / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield


@pytest.fixture(scope="session")
def moto_server_session() -> Iterator[MotoServer]:
    """One moto standalone server (S3, SQS) per test session, on a free loopback port."""
    with MotoServer() as server:
        yield server


@pytest.fixture
def moto_server(moto_server_session: MotoServer) -> MotoServer:
    """The session's moto server, emptied of buckets, queues and messages for this test."""
    moto_server_session.reset()
    return moto_server_session
