"""The one table between domain errors and gRPC status codes, used by the server interceptor and the client."""

from __future__ import annotations

import grpc

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
