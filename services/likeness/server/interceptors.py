"""The one server interceptor every service uses: request ids, error mapping, logging and per-RPC metrics.

Domain cores raise `likeness.errors` exceptions; this maps each to its gRPC status with the exception's message.
Anything else is a bug: it is logged with its traceback under the request id, and the client gets INTERNAL with a
fixed message carrying only that id, so internals never leak.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from likeness import errors
from likeness.api.status import ERROR_CODES, RETRY_PUSHBACK_KEY, STATUS_DETAILS_KEY, retry_pushback, status_details
from likeness.server import metrics
from likeness.server.auth import Authenticator, NoAuthentication
from likeness.server.context import DEFAULT_TENANT, principal_var, tenant_var
from likeness.server.logs import request_id_var

log = logging.getLogger("likeness.rpc")

REQUEST_ID_KEY = "x-request-id"


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status a domain exception maps to (INTERNAL for anything that is not a domain error)."""
    for cls in type(exc).__mro__:
        if cls in ERROR_CODES:
            return ERROR_CODES[cls]
    return grpc.StatusCode.UNKNOWN if isinstance(exc, errors.LikenessError) else grpc.StatusCode.INTERNAL


def _split_method(full_method: str) -> tuple[str, str]:
    _, service, method = full_method.split("/", 2)
    return service, method


class _Call:
    """Bookkeeping of one RPC: ids, timing, metrics, and the status it ended with."""

    def __init__(self, details: grpc.HandlerCallDetails, rpc_type: str) -> None:
        self.service, self.method = _split_method(details.method)
        self.rpc_type = rpc_type
        incoming = dict(details.invocation_metadata or ())
        supplied = str(incoming.get(REQUEST_ID_KEY, ""))[:64]
        self.request_id = supplied if supplied.isprintable() and supplied else uuid.uuid4().hex
        self.code = grpc.StatusCode.OK
        self.started = time.perf_counter()

    def enter(self, context: grpc.aio.ServicerContext) -> None:
        request_id_var.set(self.request_id)
        tenant_var.set(DEFAULT_TENANT)
        context.set_trailing_metadata(((REQUEST_ID_KEY, self.request_id),))
        metrics.RPC_STARTED.labels(self.service, self.method, self.rpc_type).inc()
        metrics.RPC_IN_FLIGHT.labels(self.service).inc()

    async def fail(self, exc: BaseException, context: grpc.aio.ServicerContext) -> None:
        """Turns an exception into the RPC's status and aborts (abort raises, ending the handler)."""
        trailers: tuple[tuple[str, str | bytes], ...] = ((REQUEST_ID_KEY, self.request_id),)
        if isinstance(exc, errors.LikenessError):
            self.code = status_for(exc)
            log.info("rpc rejected", extra={"method": self.method, "code": self.code.name, "reason": str(exc)})
            message = str(exc)
            details = status_details(exc, self.code, message)
            if details is not None:
                trailers += ((STATUS_DETAILS_KEY, details),)
            pushback = retry_pushback(exc)
            if pushback is not None:
                trailers += ((RETRY_PUSHBACK_KEY, pushback),)
        elif isinstance(exc, NotImplementedError):
            # The generated base servicer's method: this server does not serve the RPC (a newer client).
            self.code = grpc.StatusCode.UNIMPLEMENTED
            log.info("rpc not implemented", extra={"method": self.method})
            message = f"{self.method} is not implemented by this server; upgrade the server or call another RPC"
        else:
            self.code = grpc.StatusCode.INTERNAL
            log.error("rpc failed", extra={"method": self.method}, exc_info=exc)
            message = f"internal error; quote request id {self.request_id} when reporting it"
        await context.abort(self.code, message, trailing_metadata=trailers)

    def finish(self) -> None:
        elapsed = time.perf_counter() - self.started
        metrics.RPC_IN_FLIGHT.labels(self.service).dec()
        metrics.RPC_HANDLED.labels(self.service, self.method, self.rpc_type, self.code.name).inc()
        metrics.RPC_LATENCY.labels(self.service, self.method, self.rpc_type).observe(elapsed)
        log.debug(
            "rpc finished",
            extra={"method": self.method, "code": self.code.name, "duration_ms": round(elapsed * 1000, 2)},
        )


def _certificate_name(context: grpc.aio.ServicerContext) -> str:
    """The common name of the caller's client certificate, which the TLS handshake verified ("" without one)."""
    names = context.auth_context().get("x509_common_name") or ()
    return names[0].decode("utf-8", "replace") if names else ""


def _note_abort(call: _Call, context: grpc.aio.ServicerContext) -> None:
    code = context.code()
    call.code = code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler with request ids, authentication, domain-error mapping, logging and metrics."""

    def __init__(self, authenticator: Authenticator | None = None) -> None:
        self.authenticator: Authenticator = authenticator or NoAuthentication()

    async def _authenticate(self, details: grpc.HandlerCallDetails, context: grpc.aio.ServicerContext) -> None:
        metadata = {key: value for key, value in (details.invocation_metadata or ()) if isinstance(value, str)}
        principal = await self.authenticator.authenticate(metadata, _certificate_name(context))
        tenant_var.set(principal.tenant)
        principal_var.set(principal)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(("/grpc.health", "/grpc.reflection")):
            return handler
        # The same vocabulary as the series created at start-up (metrics.initialize_rpc_series).
        kind = metrics.rpc_type(client_streaming=handler.request_streaming, server_streaming=handler.response_streaming)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, handler_call_details, kind),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(handler.stream_unary, handler_call_details, kind),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, handler_call_details, kind),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(handler.stream_stream, handler_call_details, kind),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap_unary(self, behavior: Callable, details: grpc.HandlerCallDetails, rpc_type: str) -> Callable:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = _Call(details, rpc_type)
            call.enter(context)
            try:
                await self._authenticate(details, context)
                return await behavior(request, context)
            except asyncio.CancelledError:
                call.code = grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:
                _note_abort(call, context)
                raise
            except Exception as exc:
                await call.fail(exc, context)
            finally:
                call.finish()

        return wrapper

    def _wrap_stream(self, behavior: Callable, details: grpc.HandlerCallDetails, rpc_type: str) -> Callable:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            call = _Call(details, rpc_type)
            call.enter(context)
            try:
                await self._authenticate(details, context)
                async for response in behavior(request, context):
                    yield response
            except (asyncio.CancelledError, GeneratorExit):
                call.code = grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:
                _note_abort(call, context)
                raise
            except Exception as exc:
                await call.fail(exc, context)
            finally:
                call.finish()

        return wrapper
