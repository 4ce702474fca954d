"""Error types the emulator raises, each carrying the AWS error code and HTTP status."""

from __future__ import annotations


class ApiError(Exception):
    """An error answered on the wire as `x-amzn-ErrorType` plus a JSON `{"message": ...}` body."""

    code: str = "InternalServerException"
    status: int = 500

    def __init__(self, message: str) -> None:
        """Keep the message that goes into the JSON body."""
        super().__init__(message)
        self.message = message


class ValidationError(ApiError):
    """ValidationException: the input breaks a constraint of the service model."""

    code = "ValidationException"
    status = 400


class NotFoundError(ApiError):
    """ResourceNotFoundException: a datastore, image set or version does not exist."""

    code = "ResourceNotFoundException"
    status = 404


class AccessDeniedError(ApiError):
    """AccessDeniedException: the caller may not touch this datastore."""

    code = "AccessDeniedException"
    status = 403


class ThrottlingError(ApiError):
    """ThrottlingException: a quota or an injected throttle refused the request."""

    code = "ThrottlingException"
    status = 429


class ConflictError(ApiError):
    """ConflictException: the resource is in a state that forbids the action."""

    code = "ConflictException"
    status = 409


class InternalError(ApiError):
    """InternalServerException: an injected or unexpected server-side failure."""

    code = "InternalServerException"
    status = 500


class MissingAuthError(ApiError):
    """MissingAuthenticationTokenException: the request carries no SigV4 signature."""

    code = "MissingAuthenticationTokenException"
    status = 403


class UnknownOperationError(ApiError):
    """UnknownOperationException: no operation is bound to this method and path."""

    code = "UnknownOperationException"
    status = 404


class DatasetError(ValueError):
    """A dataset file or dict is invalid; the message is one line naming the field."""
