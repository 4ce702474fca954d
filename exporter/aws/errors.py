"""ApiError and the mapping from AWS error codes and HTTP statuses to outcomes."""

from __future__ import annotations

from exporter.outcomes import Outcome

# The code given to an answer botocore could not parse (see client._TotalParser): never sent by
# AWS, so it cannot be confused with a real error code.
UNREADABLE_CODE = "HealthImagingExporter.UnreadableResponse"

_THROTTLE_CODES = frozenset(
    {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
)
_DENIED_CODES = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "MissingAuthenticationTokenException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "ExpiredToken",
    }
)


class ApiError(Exception):
    """A HealthImaging call failed; `outcome` says how, the message is one short line."""

    def __init__(self, outcome: Outcome | str, message: str) -> None:
        super().__init__(message)
        # Outcome(...) refuses a value that is not a member: a typo cannot become a label.
        self.outcome = Outcome(outcome)


def malformed(message: str) -> ApiError:
    """Return the error for an answer that cannot be read."""
    return ApiError(Outcome.MALFORMED_RESPONSE, message)


def classify_error_code(code: str, status: int | None) -> Outcome:
    """Map an AWS error code and HTTP status to an outcome."""
    if code == UNREADABLE_CODE:
        return Outcome.MALFORMED_RESPONSE
    if code in _THROTTLE_CODES or status == 429:
        return Outcome.THROTTLED
    if code in _DENIED_CODES or status == 403:
        return Outcome.ACCESS_DENIED
    if code == "ResourceNotFoundException" or status == 404:
        return Outcome.NOT_FOUND
    if status is not None and status >= 500:
        return Outcome.SERVER_ERROR
    return Outcome.VALIDATION_ERROR


def shown(value: object, limit: int = 40) -> str:
    """Render a value from an answer for a log line: ASCII, one line, at most `limit` chars.

    ascii() escapes lone surrogates and control characters, so the line can always be written.
    """
    text = ascii(value) if not isinstance(value, str) else ascii(value)[1:-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(text: str, limit: int = 200) -> str:
    """Flatten free text to one printable line of at most `limit` chars (for log lines only)."""
    # Lone surrogates cannot be encoded, so a log handler would fail on them: replace them.
    clean = text[: limit * 4].encode("utf-8", "replace").decode("utf-8")
    flat = " ".join("".join(c if c.isprintable() else " " for c in clean).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
