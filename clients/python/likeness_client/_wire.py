"""The few well-known gRPC messages the client needs beyond the Likeness protos, described in a private descriptor
pool from their published field numbers: google.rpc.Status, BadRequest, RetryInfo and QuotaFailure
(google/rpc/status.proto, error_details.proto) and the health check (grpc/health/v1/health.proto).

A private pool means the package needs only protobuf (no googleapis-common-protos, no grpcio-health-checking) and
never clashes with another copy of those .proto files that an application imports: the wire format is the same.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, duration_pb2, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_STRING, _INT32, _ENUM, _MESSAGE = _F.TYPE_STRING, _F.TYPE_INT32, _F.TYPE_ENUM, _F.TYPE_MESSAGE
_REPEATED, _OPTIONAL = _F.LABEL_REPEATED, _F.LABEL_OPTIONAL

# file -> package, [(message, [(field name, number, type, label, type name)])]; a nested message follows its parent.
_FILES: dict[str, tuple[str, list[tuple[str, list[tuple[str, int, int, int, str]]]]]] = {
    "likeness_client/google_rpc.proto": (
        "google.rpc",
        [
            (
                "Status",
                [
                    ("code", 1, _INT32, _OPTIONAL, ""),
                    ("message", 2, _STRING, _OPTIONAL, ""),
                    ("details", 3, _MESSAGE, _REPEATED, ".google.protobuf.Any"),
                ],
            ),
            ("RetryInfo", [("retry_delay", 1, _MESSAGE, _OPTIONAL, ".google.protobuf.Duration")]),
            ("QuotaFailure", [("violations", 1, _MESSAGE, _REPEATED, ".google.rpc.QuotaFailure.Violation")]),
            (
                "QuotaFailure.Violation",
                [("subject", 1, _STRING, _OPTIONAL, ""), ("description", 2, _STRING, _OPTIONAL, "")],
            ),
            ("BadRequest", [("field_violations", 1, _MESSAGE, _REPEATED, ".google.rpc.BadRequest.FieldViolation")]),
            (
                "BadRequest.FieldViolation",
                [("field", 1, _STRING, _OPTIONAL, ""), ("description", 2, _STRING, _OPTIONAL, "")],
            ),
        ],
    ),
    "likeness_client/grpc_health.proto": (
        "grpc.health.v1",
        [
            ("HealthCheckRequest", [("service", 1, _STRING, _OPTIONAL, "")]),
            (
                "HealthCheckResponse",
                [("status", 1, _ENUM, _OPTIONAL, ".grpc.health.v1.HealthCheckResponse.ServingStatus")],
            ),
        ],
    ),
}
#: HealthCheckResponse.ServingStatus values.
HEALTH_SERVING_STATUS = {"UNKNOWN": 0, "SERVING": 1, "NOT_SERVING": 2, "SERVICE_UNKNOWN": 3}
HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"


def _build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for well_known in (any_pb2, duration_pb2):
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(well_known.DESCRIPTOR.serialized_pb))
    for file_name, (package, messages) in _FILES.items():
        file = descriptor_pb2.FileDescriptorProto(name=file_name, package=package, syntax="proto3")
        file.dependency.extend(["google/protobuf/any.proto", "google/protobuf/duration.proto"])
        top: dict[str, descriptor_pb2.DescriptorProto] = {}
        for name, fields in messages:
            outer, _, inner = name.partition(".")
            if inner:
                message = top[outer].nested_type.add(name=inner)
            else:
                message = file.message_type.add(name=outer)
                top[outer] = message
            for field_name, number, kind, label, type_name in fields:
                message.field.add(name=field_name, number=number, type=kind, label=label, type_name=type_name or None)
        if package == "grpc.health.v1":
            status_enum = top["HealthCheckResponse"].enum_type.add(name="ServingStatus")
            for value_name, number in HEALTH_SERVING_STATUS.items():
                status_enum.value.add(name=value_name, number=number)
        pool.Add(file)
    return pool


_POOL = _build_pool()


def _message_class(full_name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(full_name))


#: google.rpc.Status: code, message and the packed details.
RpcStatus = _message_class("google.rpc.Status")
#: google.rpc.BadRequest: which request fields to fix.
BadRequest = _message_class("google.rpc.BadRequest")
#: google.rpc.RetryInfo: how long to wait before retrying.
RetryInfo = _message_class("google.rpc.RetryInfo")
#: google.rpc.QuotaFailure: which quota was exceeded.
QuotaFailure = _message_class("google.rpc.QuotaFailure")
#: grpc.health.v1.HealthCheckRequest / HealthCheckResponse.
HealthCheckRequest = _message_class("grpc.health.v1.HealthCheckRequest")
HealthCheckResponse = _message_class("grpc.health.v1.HealthCheckResponse")
