"""The server's side of status details. The table between domain errors and status codes, and the google.rpc
detail messages, are the client package's (`likeness_client.status`): one definition that the interceptor encodes
with and every client decodes with."""

from __future__ import annotations

from typing import Any

import grpc

from likeness import errors
from likeness_client.status import (
    ERROR_CODES,
    ERRORS_BY_CODE,
    STATUS_DETAILS_KEY,
    BadRequest,
    QuotaFailure,
    RetryInfo,
    pack_status,
)

__all__ = [
    "ERRORS_BY_CODE",
    "ERROR_CODES",
    "RETRY_PUSHBACK_KEY",
    "STATUS_DETAILS_KEY",
    "retry_pushback",
    "status_details",
]

#: The gRPC retry-pushback trailer (gRPC proposal A6): milliseconds a client's retry policy must wait before its
#: next attempt; a negative value tells it not to retry at all.
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"
#: Delays up to this are left to the clients' automatic retries; a longer one (a per-minute quota) is the caller's
#: decision, so the call fails at once with RetryInfo instead of holding the caller's deadline.
MAX_AUTOMATIC_RETRY_SECONDS = 10.0


def status_details(exc: errors.LikenessError, code: grpc.StatusCode, message: str) -> bytes | None:
    """The serialized google.rpc.Status with the details a client can act on, or None when there are none:
    BadRequest (the field to fix) for an InvalidArgument that names one; RetryInfo (how long to wait) and QuotaFailure
    (which quota) for a ResourceExhausted that names them."""
    details: list[Any] = []
    if isinstance(exc, errors.InvalidArgument) and exc.field:
        violation = BadRequest.FieldViolation(field=exc.field, description=exc.reason)
        details.append(BadRequest(field_violations=[violation]))
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        nanos = int(retry_after * 1e9)
        details.append(RetryInfo(retry_delay={"seconds": nanos // 10**9, "nanos": nanos % 10**9}))
    quota = getattr(exc, "quota", "")
    if quota:
        details.append(QuotaFailure(violations=[QuotaFailure.Violation(subject=quota, description=message)]))
    return pack_status(code, message, details) if details else None


def retry_pushback(exc: errors.LikenessError) -> str | None:
    """The retry-pushback trailer value for a ResourceExhausted with a delay: the delay in milliseconds when short
    enough for an automatic retry, "-1" (do not retry) when longer. None otherwise: the policy's own backoff."""
    if not isinstance(exc, errors.ResourceExhausted) or exc.retry_after is None:
        return None
    if exc.retry_after > MAX_AUTOMATIC_RETRY_SECONDS:
        return "-1"
    return str(max(0, int(exc.retry_after * 1000)))
