"""The API's error vocabulary, raised by the service cores and mapped to status codes by the server's interceptor.

The classes are the thin client package's (`likeness_client.errors`, which imports nothing), so a service raises
and a client catches the very same classes; this module only gives the cores their usual import path.
"""

from likeness_client.errors import (
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    LikenessError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "LikenessError",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
]
