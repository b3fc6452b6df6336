"""The errors of the Likeness API, one class per gRPC status code a caller can act on.

The client raises them for failed calls (`likeness_client.status.ERRORS_BY_CODE`), and the services raise the same
classes from their cores, which never import gRPC: the server's interceptor maps each class to its status code.
This module imports nothing, so a service core can use it without pulling in gRPC.
"""

from __future__ import annotations


class LikenessError(Exception):
    """Base class of every error a caller can act on. The message is shown to clients."""

    #: The gRPC status code (a `grpc.StatusCode`) of a failed call; None for errors raised before any call.
    code: object = None
    #: The server's request id of a failed call (the `x-request-id` trailer), for support and logs.
    request_id: str = ""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        self.reason = message  # without the field name
        text = f"{field}: {message}" if field else message
        super().__init__(text)
        self.message = text


class InvalidArgument(LikenessError):
    """The request is malformed; `field` names the part to fix (maps to INVALID_ARGUMENT)."""


class Unauthenticated(LikenessError):
    """No valid credentials: a missing, malformed, unknown, revoked or expired API key (maps to UNAUTHENTICATED)."""


class PermissionDenied(LikenessError):
    """The caller is known but its role may not do this (maps to PERMISSION_DENIED)."""


class NotFound(LikenessError):
    """A referenced dataset, job, model or prompt does not exist (maps to NOT_FOUND)."""


class AlreadyExists(LikenessError):
    """The resource exists and the request would overwrite it (maps to ALREADY_EXISTS)."""


class FailedPrecondition(LikenessError):
    """The request is valid but the system is not in a state to serve it (maps to FAILED_PRECONDITION)."""


class ResourceExhausted(LikenessError):
    """A queue, cache or quota is full; retry later (maps to RESOURCE_EXHAUSTED).

    `retry_after` (seconds) is sent as a google.rpc.RetryInfo status detail; `quota` names the exceeded quota,
    sent as a google.rpc.QuotaFailure violation."""

    def __init__(
        self, message: str, *, field: str | None = None, retry_after: float | None = None, quota: str = ""
    ) -> None:
        super().__init__(message, field=field)
        self.retry_after = retry_after
        self.quota = quota


class Unavailable(LikenessError):
    """The service is starting, draining or a dependency is down; retry (maps to UNAVAILABLE)."""


class Cancelled(LikenessError):
    """The work was cancelled by the caller (maps to CANCELLED)."""


class DeadlineExceeded(LikenessError):
    """The caller's deadline passed before the work finished (maps to DEADLINE_EXCEEDED)."""
