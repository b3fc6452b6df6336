"""Per-RPC Prometheus metrics shared by every service, and the /metrics HTTP endpoint."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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
SERVICE_UP = Gauge("likeness_service_serving", "1 when the service reports SERVING", ["service"])


def start_metrics_server(port: int, host: str = "0.0.0.0") -> int:
    """Serves /metrics on its own port; returns the bound port (useful when 0 asks for a free one)."""
    server, _thread = start_http_server(port, addr=host)
    bound = server.server_address[1]
    log.info("metrics endpoint listening", extra={"port": bound})
    return bound
