"""Per-RPC Prometheus metrics shared by every service, and the /metrics HTTP endpoint."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Iterable
from typing import cast

from google.protobuf import descriptor_pool
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from likeness.server.tls import TlsFiles, watch_ssl_context

log = logging.getLogger(__name__)

RPC_STARTED = Counter(
    "likeness_grpc_server_started_total", "RPCs started", ["grpc_service", "grpc_method", "grpc_type"]
)
RPC_HANDLED = Counter(
    "likeness_grpc_server_handled_total",
    "RPCs completed, by status code",
    ["grpc_service", "grpc_method", "grpc_type", "grpc_code"],
)
RPC_LATENCY = Histogram(
    "likeness_grpc_server_handling_seconds",
    "Time from the start of an RPC to its end; streaming RPCs are timed to the end of the stream",
    ["grpc_service", "grpc_method", "grpc_type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200),
)
RPC_IN_FLIGHT = Gauge("likeness_grpc_server_in_flight", "RPCs being served", ["grpc_service"])
# Labelled `component`, not `service`: the Prometheus Operator gives every series a `service` target label (the
# Kubernetes Service), which would rename this one to `exported_service`.
SERVICE_UP = Gauge("likeness_service_serving", "1 when the component reports SERVING", ["component"])

#: Status codes whose RPC_HANDLED series exist from start-up for every method: OK and every code the alerting
#: rules select (deploy/prometheus/alerts.yml), so that `rate()` sees the first failures after a restart.
INITIAL_CODES = ("OK", "INTERNAL", "UNKNOWN", "UNAVAILABLE", "DATA_LOSS", "UNIMPLEMENTED", "RESOURCE_EXHAUSTED")


def rpc_type(*, client_streaming: bool, server_streaming: bool) -> str:
    """The `grpc_type` label of a method."""
    if client_streaming:
        return "bidi_stream" if server_streaming else "client_stream"
    return "server_stream" if server_streaming else "unary"


def initialize_rpc_series(service_names: Iterable[str]) -> None:
    """Creates the per-RPC series of every method of the services, at zero, before any call: a series that
    appears with its first increment has no earlier sample, so `rate()` and `increase()` miss that increment."""
    pool = descriptor_pool.Default()
    for service_name in service_names:
        try:
            service = pool.FindServiceByName(service_name)
        except KeyError:
            log.warning("no descriptor for service; its metrics appear on first call", extra={"service": service_name})
            continue
        RPC_IN_FLIGHT.labels(service_name)
        for method in service.methods:
            kind = rpc_type(client_streaming=method.client_streaming, server_streaming=method.server_streaming)
            RPC_STARTED.labels(service_name, method.name, kind)
            RPC_LATENCY.labels(service_name, method.name, kind)
            for code in INITIAL_CODES:
                RPC_HANDLED.labels(service_name, method.name, kind, code)


def start_metrics_server(port: int, host: str = "0.0.0.0", *, tls: TlsFiles | None = None) -> int:
    """Serves /metrics on its own port, over TLS when `tls` is given (certificate reloaded when it rotates);
    returns the bound port (useful when 0 asks for a free one)."""
    if tls is None:
        server, _thread = start_http_server(port, addr=host)
    else:
        server, _thread = start_http_server(port, addr=host, certfile=tls.cert_file, keyfile=tls.key_file)
        watch_ssl_context(cast(ssl.SSLSocket, server.socket).context, tls, threading.Event())
    bound = server.server_address[1]
    log.info("metrics endpoint listening", extra={"port": bound, "tls": tls is not None})
    return bound
