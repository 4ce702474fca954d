"""Content negotiation for /metrics."""

from __future__ import annotations

import pytest

from exporter.web import accepts_gzip, wants_openmetrics


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, False),
        ("text/plain", False),
        ("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5", True),
        ("application/openmetrics-text-ish", False),
        ("*/*", False),
    ],
)
def test_openmetrics_when_asked(accept: str | None, expected: bool) -> None:
    assert wants_openmetrics(accept) is expected


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [
        (None, False),
        ("gzip", True),
        ("br, GZIP;q=0.5", True),
        ("gzip;q=0", False),
        ("identity", False),
    ],
)
def test_gzip_when_allowed(encoding: str | None, expected: bool) -> None:
    assert accepts_gzip(encoding) is expected
