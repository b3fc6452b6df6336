"""Status codes and status details: the one table between `likeness_client.errors` and gRPC status codes, and the
google.rpc detail messages (BadRequest, RetryInfo, QuotaFailure) that the services attach to a failed call.

The detail messages come from `likeness_client._wire` (a private descriptor pool), so this package needs only
protobuf; the services build their details with these same classes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf.message import Message

from likeness_client import errors
from likeness_client._wire import BadRequest, QuotaFailure, RetryInfo, RpcStatus

__all__ = [
    "ERRORS_BY_CODE",
    "ERROR_CODES",
    "BadRequest",
    "QuotaFailure",
    "RetryInfo",
    "RpcStatus",
    "error_from_status",
    "pack_status",
    "translate_error",
    "unpack_details",
]

ERROR_CODES: dict[type[errors.LikenessError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Cancelled: grpc.StatusCode.CANCELLED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}
#: The inverse, for turning a status back into the domain exception.
ERRORS_BY_CODE: dict[grpc.StatusCode, type[errors.LikenessError]] = {code: cls for cls, code in ERROR_CODES.items()}

#: Trailing metadata key of the serialized google.rpc.Status that carries a status's details.
STATUS_DETAILS_KEY = "grpc-status-details-bin"
#: Trailing metadata key of the server's request id.
REQUEST_ID_KEY = "x-request-id"

_TYPE_URL_PREFIX = "type.googleapis.com/"


def pack_status(code: grpc.StatusCode, message: str, details: Iterable[Message]) -> bytes:
    """The serialized google.rpc.Status with `details` packed as Any, for the status-details trailer."""
    status = RpcStatus(code=code.value[0], message=message)
    for detail in details:
        status.details.add(type_url=_TYPE_URL_PREFIX + detail.DESCRIPTOR.full_name, value=detail.SerializeToString())
    return bytes(status.SerializeToString())


def _trailers(error: grpc.RpcError) -> list[tuple[str, Any]]:
    trailing = getattr(error, "trailing_metadata", None)
    metadata = trailing() if callable(trailing) else None
    return list(metadata or ())


def unpack_details(trailers: Iterable[tuple[str, Any]], detail_type: Any) -> list[Any]:
    """The details of `detail_type` (BadRequest, RetryInfo, ...) in a failed call's trailing metadata."""
    wanted = _TYPE_URL_PREFIX + detail_type.DESCRIPTOR.full_name
    found = []
    for key, value in trailers:
        if key != STATUS_DETAILS_KEY:
            continue
        for detail in RpcStatus.FromString(value).details:
            if detail.type_url == wanted:
                found.append(detail_type.FromString(detail.value))
    return found


def retry_delay_seconds(trailers: Iterable[tuple[str, Any]]) -> float | None:
    """The RetryInfo delay a server attached to a failed call, in seconds, or None."""
    for info in unpack_details(trailers, RetryInfo):
        return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


def bad_request_field(trailers: Iterable[tuple[str, Any]]) -> str | None:
    """The request field a server's BadRequest detail names as the one to fix, or None."""
    for bad in unpack_details(trailers, BadRequest):
        for violation in bad.field_violations:
            return str(violation.field)
    return None


def error_from_status(
    code: grpc.StatusCode, details: str | None, trailers: Iterable[tuple[str, Any]]
) -> errors.LikenessError:
    """The `likeness_client.errors` exception for a failed call's status, with its details surfaced:
    `code`, `request_id`, `field` (from BadRequest) and, for ResourceExhausted, `retry_after` (from RetryInfo)."""
    trailers = list(trailers)
    request_id = ""
    for key, value in trailers:
        if key == REQUEST_ID_KEY:
            request_id = str(value)
    text = details or code.name
    message = f"{text} (request id {request_id})" if request_id else text
    cls = ERRORS_BY_CODE.get(code, errors.LikenessError)
    exc = cls(message if cls is not errors.LikenessError else f"{code.name}: {message}")
    exc.code = code
    exc.request_id = request_id
    exc.field = bad_request_field(trailers)
    if isinstance(exc, errors.ResourceExhausted):
        exc.retry_after = retry_delay_seconds(trailers)
    return exc


def translate_error(error: grpc.RpcError) -> errors.LikenessError:
    """The `likeness_client.errors` exception for a failed call, synchronous or asyncio (see `error_from_status`)."""
    code = getattr(error, "code", None)
    if not callable(code):
        return errors.LikenessError(f"UNKNOWN: {error}")
    return error_from_status(code(), error.details(), _trailers(error))
