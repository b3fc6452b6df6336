"""Server lifecycle shared by every service: build, start, serve, drain on SIGTERM, stop.

Modelled on grpc's aio examples: a `grpc.aio` server with the standard health service (NOT_SERVING while models load
and while draining; Check, Watch and List), reflection (`grpc.reflection.v1` and `v1alpha`), one interceptor chain,
and a Prometheus endpoint on its own port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from likeness.server import metrics
from likeness.server.auth import Authenticator, make_authenticator
from likeness.server.component import ServiceComponent
from likeness.server.cpu import apply_cpu_threads
from likeness.server.interceptors import ServerInterceptor
from likeness.server.settings import Settings
from likeness.server.tls import server_credentials

log = logging.getLogger("likeness.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
#: The current name of the reflection service (grpcurl and recent clients try it first); grpcio-reflection ships
#: only v1alpha, whose messages v1 renamed without changing a field.
REFLECTION_V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
_REFLECTION_V1_FILE = "grpc/reflection/v1/reflection.proto"
#: As grpc-go: List refuses with RESOURCE_EXHAUSTED beyond this many services.
_MAX_LISTED_SERVICES = 100


class HealthServicer(health.aio.HealthServicer):
    """grpcio-health-checking's aio servicer with `List`, which it lacks (its generated base answers
    UNIMPLEMENTED): the status of every service that has one, the overall `""` included, as Check reports them."""

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        statuses = dict(self._server_status)
        if len(statuses) > _MAX_LISTED_SERVICES:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many services to list")
        return health_pb2.HealthListResponse(
            statuses={name: health_pb2.HealthCheckResponse(status=status) for name, status in statuses.items()}
        )


def _register_reflection_v1_descriptor() -> None:
    """Adds `grpc/reflection/v1/reflection.proto` to the default pool (v1alpha's file, renamed), so that reflection
    can describe the v1 service it advertises."""
    pool = descriptor_pool.Default()
    with contextlib.suppress(KeyError):  # KeyError: not registered yet; found: an earlier server did it
        pool.FindFileByName(_REFLECTION_V1_FILE)
        return
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = proto.package, "grpc.reflection.v1"
    proto.name, proto.package = _REFLECTION_V1_FILE, new
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(f".{old}."):
                field.type_name = f".{new}." + field.type_name.removeprefix(f".{old}.")
    for service in proto.service:
        for method in service.method:
            method.input_type = f".{new}." + method.input_type.removeprefix(f".{old}.")
            method.output_type = f".{new}." + method.output_type.removeprefix(f".{old}.")
    proto.options.Clear()
    proto.options.java_package = "io.grpc.reflection.v1"
    proto.options.java_outer_classname = "ServerReflectionProto"
    proto.options.java_multiple_files = True
    proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    pool.AddSerializedFile(proto.SerializeToString())


def enable_reflection(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    """Serves reflection as `grpc.reflection.v1alpha` and `grpc.reflection.v1` (one implementation: the two
    protocols are the same messages under two package names), listing `service_names` and both of its own."""
    _register_reflection_v1_descriptor()
    names = [*service_names, reflection.SERVICE_NAME, REFLECTION_V1_SERVICE_NAME]
    servicer = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    handlers = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(REFLECTION_V1_SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(REFLECTION_V1_SERVICE_NAME, handlers)


def server_options(settings: Settings) -> list[tuple[str, int]]:
    limit = settings.max_message_mb * 1024 * 1024
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        # Long training watches and generation streams sit idle between events; keep them alive through proxies.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]


@dataclass
class RunningServer:
    """A started server with its components, for the caller to stop."""

    server: grpc.aio.Server
    components: Sequence[ServiceComponent]
    health: HealthServicer
    port: int
    metrics_port: int | None
    authenticator: Authenticator | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def set_serving(self, serving: bool) -> None:
        status = SERVING if serving else NOT_SERVING
        await self.health.set("", status)
        for component in self.components:
            for name in component.service_names:
                await self.health.set(name, status)
            metrics.SERVICE_UP.labels(component.name).set(1 if serving else 0)

    async def set_component_serving(self, component: ServiceComponent, serving: bool) -> None:
        """Health of one component's services (a lost dependency), without touching the others."""
        status = SERVING if serving else NOT_SERVING
        for name in component.service_names:
            await self.health.set(name, status)
        metrics.SERVICE_UP.labels(component.name).set(1 if serving else 0)

    async def stop(self, grace_seconds: float) -> None:
        """Drains: NOT_SERVING first (load balancers stop routing), then in-flight RPCs finish within the grace
        period while components stop their background work."""
        log.info("draining", extra={"grace_seconds": grace_seconds})
        await self.set_serving(False)
        await asyncio.gather(
            self.server.stop(grace_seconds),
            *(component.stop(grace_seconds) for component in self.components),
        )
        if self.authenticator is not None:
            self.authenticator.close()
        log.info("stopped")


async def start_server(
    components: Sequence[ServiceComponent], settings: Settings, *, start_metrics: bool = True
) -> RunningServer:
    """Binds the port and reports NOT_SERVING until every component has started, then SERVING."""
    apply_cpu_threads(settings.torch_threads)
    authenticator = make_authenticator(
        settings.auth,
        settings.resolved_database_url,
        settings.auth_cache_seconds,
        certificate_tenants=settings.mtls_tenants,
    )
    await authenticator.start()
    server = grpc.aio.server(interceptors=[ServerInterceptor(authenticator)], options=server_options(settings))
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    component_services: list[str] = []
    for component in components:
        component.register(server)
        component_services.extend(component.service_names)
    enable_reflection([HEALTH_SERVICE_NAME, *component_services], server)
    # Every method's series exist from the first scrape (health and reflection RPCs are not counted).
    metrics.initialize_rpc_series(component_services)
    tls = settings.tls_files
    address = f"{settings.host}:{settings.port}"
    port = server.add_secure_port(address, server_credentials(tls)) if tls else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {settings.host}:{settings.port}; is the port in use?")
    metrics_port = None
    if start_metrics and settings.metrics_port:
        metrics_port = metrics.start_metrics_server(settings.metrics_port, settings.host, tls=tls)
    running = RunningServer(server, components, health_servicer, port, metrics_port, authenticator)
    await running.set_serving(False)
    await server.start()
    log.info(
        "listening",
        extra={"port": port, "tls": bool(tls), "services": ",".join(c.name for c in components)},
    )
    started: list[ServiceComponent] = []
    try:
        for component in components:
            await component.start()
            started.append(component)
    except BaseException:
        # A component that cannot start (bad base model, unreachable storage) must not leave a half-open server.
        await server.stop(0)
        for component in reversed(started):
            await component.stop(0)
        raise
    await running.set_serving(True)
    for component in components:
        bind_health = getattr(component, "bind_health", None)
        if bind_health is not None:
            # Components whose dependencies can come and go (a database) report their own health from now on.
            bind_health(lambda serving, component=component: running.set_component_serving(component, serving))
    log.info("serving")
    return running


async def serve_forever(components: Sequence[ServiceComponent], settings: Settings) -> None:
    """Runs until SIGTERM or SIGINT, then drains within `settings.grace_seconds`."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    running = await start_server(components, settings)
    waiter = asyncio.create_task(running.server.wait_for_termination())
    stopper = asyncio.create_task(stop_requested.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    await running.stop(settings.grace_seconds)
    waiter.cancel()
