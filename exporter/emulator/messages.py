"""Transport-neutral request/response values and JSON helpers shared by the route tables."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError, ValidationError


@dataclass(frozen=True)
class Request:
    """One HTTP request as the routes see it: path without query, decoded query, raw body."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """A header value, case-insensitively."""
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None


@dataclass(frozen=True)
class Response:
    """Status, extra headers and body; the server adds Content-Length."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def json_response(status: int, payload: Any) -> Response:
    """A JSON response with a fresh request id."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(
        status,
        body,
        (("Content-Type", "application/json"), ("x-amzn-RequestId", str(uuid.uuid4()))),
    )


def error_response(error: ApiError) -> Response:
    """The AWS rest-json error shape: x-amzn-ErrorType header and a {"message"} body."""
    response = json_response(error.status, {"message": error.message})
    return Response(
        response.status, response.body, (*response.headers, ("x-amzn-ErrorType", error.code))
    )


def json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object (empty body = {}); ValidationException if it is not one."""
    if not request.body.strip():
        return {}
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("Request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValidationError("Request body must be a JSON object")
    return data


def int_param(request: Request, name: str) -> int | None:
    """An integer query parameter, or ValidationException when it is not one."""
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValidationError(f"Value '{raw}' at '{name}' is not a valid integer") from None
