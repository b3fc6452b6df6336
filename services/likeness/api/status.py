"""The one table between domain errors and gRPC status codes, used by the server interceptor and the client."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.message import Message

from likeness import errors

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
#: The inverse, for clients turning a status back into the domain exception.
ERRORS_BY_CODE: dict[grpc.StatusCode, type[errors.LikenessError]] = {code: cls for cls, code in ERROR_CODES.items()}

#: Trailing metadata key of the google.rpc.Status that carries a status's details (grpc-status-details-bin).
STATUS_DETAILS_KEY = "grpc-status-details-bin"


def status_details(exc: errors.LikenessError, code: grpc.StatusCode, message: str) -> bytes | None:
    """The serialized google.rpc.Status with the details a client can act on, or None when there are none:
    BadRequest (the field to fix) for an InvalidArgument that names one; RetryInfo (how long to wait) and
    QuotaFailure (which quota) for a ResourceExhausted that names them."""
    from google.protobuf import any_pb2, duration_pb2
    from google.rpc import error_details_pb2, status_pb2

    details: list[Any] = []
    if isinstance(exc, errors.InvalidArgument) and exc.field:
        violation = error_details_pb2.BadRequest.FieldViolation(field=exc.field, description=exc.reason)
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_after * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    quota = getattr(exc, "quota", "")
    if quota:
        quota_violation = error_details_pb2.QuotaFailure.Violation(subject=quota, description=message)
        details.append(error_details_pb2.QuotaFailure(violations=[quota_violation]))
    if not details:
        return None
    packed = []
    for detail in details:
        wrapper = any_pb2.Any()
        wrapper.Pack(detail)
        packed.append(wrapper)
    status = status_pb2.Status(code=code.value[0], message=message, details=packed)
    return bytes(status.SerializeToString())


def _unpacked(error: grpc.RpcError, detail_type: type[Message]) -> list[Message]:
    """The details of `detail_type` a server attached to a failed call."""
    from google.rpc import status_pb2

    found = []
    for key, value in getattr(error, "trailing_metadata", lambda: ())() or ():
        if key != STATUS_DETAILS_KEY:
            continue
        for detail in status_pb2.Status.FromString(value).details:
            message = detail_type()
            if detail.Unpack(message):
                found.append(message)
    return found


def retry_delay_seconds(error: grpc.RpcError) -> float | None:
    """The RetryInfo delay a server attached to a failed call, in seconds, or None."""
    from google.rpc import error_details_pb2

    for info in _unpacked(error, error_details_pb2.RetryInfo):
        return float(info.retry_delay.ToNanoseconds()) / 1e9  # type: ignore[attr-defined]
    return None


def bad_request_field(error: grpc.RpcError) -> str | None:
    """The request field a server's BadRequest detail names as the one to fix, or None."""
    from google.rpc import error_details_pb2

    for bad in _unpacked(error, error_details_pb2.BadRequest):
        for violation in bad.field_violations:  # type: ignore[attr-defined]
            return str(violation.field)
    return None
