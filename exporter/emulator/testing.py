"""Helpers for tests against the emulator: a boto3 client for it and raw HTTP calls."""

from __future__ import annotations

import http.client
import json
from typing import Any

import boto3
import botocore.config

SIGV4 = (
    "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/medical-imaging/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=0000"
)


def client_for(url: str) -> Any:
    """A medical-imaging client for the emulator: no host prefix, one attempt, dummy keys."""
    return boto3.client(
        "medical-imaging",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=botocore.config.Config(inject_host_prefix=False, retries={"total_max_attempts": 1}),
    )


def raw_request(
    port: int,
    method: str,
    target: str,
    body: bytes | str | None = None,
    *,
    signed: bool = True,
) -> tuple[int, dict[str, str], Any]:
    """One request over a fresh connection: status, headers, and the body parsed as JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Authorization": SIGV4} if signed else {}
        conn.request(method, target, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, dict(response.getheaders()), json.loads(data) if data else None
    finally:
        conn.close()


class ManualClock:
    """A time source tests move by hand; pass it as Backend(clock=...) or (monotonic=...)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        """Start at `now` (epoch seconds)."""
        self.now = now

    def __call__(self) -> float:
        """The current time."""
        return self.now
