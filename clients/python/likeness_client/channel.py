"""Where the services are and how to reach them: addresses, credentials, channel options and the service config.

One address reaches all three services (the embedded `likeness serve all`, or a deployment's single entry, the
gateway). Per-service addresses override it for layouts without one. The retry policy and the default deadline
of each call kind are the gRPC service config in `service_config.json` (the same file every SDK embeds), so gRPC
itself retries UNAVAILABLE and RESOURCE_EXHAUSTED with backoff, honouring the server's `grpc-retry-pushback-ms`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import grpc.aio

from likeness_client import __version__
from likeness_client.v1 import gallery_service_pb2_grpc as gallery_grpc
from likeness_client.v1 import inference_service_pb2_grpc as inference_grpc
from likeness_client.v1 import trainer_service_pb2_grpc as trainer_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"
#: Matches the server's default `max_message_mb`; inline photos and generated images must fit in one message.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
SERVICES = ("trainer", "inference", "gallery")


@cache
def service_config() -> str:
    """The gRPC service config (JSON): retry policy and per-method default deadlines."""
    return resources.files("likeness_client").joinpath("service_config.json").read_text(encoding="utf-8")


def channel_options(max_message_bytes: int = MAX_MESSAGE_BYTES, *, retries: bool = True) -> list[tuple[str, Any]]:
    """Channel options matching the server: its message-size limit; keepalive pings every 30 s (the server accepts
    one every 10 s) so long watches and generations survive proxies and load balancers; the service config."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.primary_user_agent", f"likeness-python/{__version__}"),
        ("grpc.service_config", service_config()),
        ("grpc.enable_retries", 1 if retries else 0),
        # Retries replay the request: an upload replays while its buffered messages fit in this.
        ("grpc.per_rpc_retry_buffer_size", 4 * 1024 * 1024),
    ]
    return options


@dataclass(frozen=True)
class Endpoints:
    """The address of each service; they are all the same one unless a layout splits them."""

    trainer: str
    inference: str
    gallery: str

    @classmethod
    def resolve(
        cls,
        address: str | None = None,
        *,
        trainer_address: str | None = None,
        inference_address: str | None = None,
        gallery_address: str | None = None,
    ) -> Endpoints:
        """`address` (default $LIKENESS_ADDRESS, else 127.0.0.1:50051) for every service, unless its own address is
        given (or set in $LIKENESS_TRAINER_ADDRESS, $LIKENESS_INFERENCE_ADDRESS, $LIKENESS_GALLERY_ADDRESS)."""
        shared = address or os.environ.get("LIKENESS_ADDRESS") or DEFAULT_ADDRESS
        given = {"trainer": trainer_address, "inference": inference_address, "gallery": gallery_address}
        return cls(
            **{name: given[name] or os.environ.get(f"LIKENESS_{name.upper()}_ADDRESS") or shared for name in SERVICES}
        )

    def distinct(self) -> list[str]:
        """Each address once, in service order."""
        return list(dict.fromkeys((self.trainer, self.inference, self.gallery)))


def channel_credentials(
    tls_ca_file: str | None, credentials: grpc.ChannelCredentials | None
) -> grpc.ChannelCredentials | None:
    """`credentials` as given; else TLS trusting `tls_ca_file` (default $LIKENESS_TLS_CA_FILE); else None, plaintext."""
    if credentials is not None:
        return credentials
    ca_file = tls_ca_file if tls_ca_file is not None else os.environ.get("LIKENESS_TLS_CA_FILE", "")
    if ca_file:
        return grpc.ssl_channel_credentials(root_certificates=Path(ca_file).read_bytes())
    return None


def api_key_or_env(api_key: str | None) -> str:
    """`api_key`, else $LIKENESS_API_KEY, else "" (no key sent)."""
    return api_key if api_key is not None else os.environ.get("LIKENESS_API_KEY", "")


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


def _with_header(details: Any, header: tuple[str, str]) -> _CallDetails:
    return _CallDetails(
        details.method,
        details.timeout,
        [*(details.metadata or ()), header],
        details.credentials,
        getattr(details, "wait_for_ready", None),
        getattr(details, "compression", None),
    )


def bearer_header(api_key: str) -> tuple[str, str]:
    """The metadata entry that carries an API key. Metadata rather than call credentials: gRPC refuses call
    credentials on plaintext channels, and the embedded server and local tests listen in plaintext."""
    return ("authorization", f"Bearer {api_key}")


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <API key>` to every call of a synchronous channel."""

    def __init__(self, api_key: str) -> None:
        self._header = bearer_header(api_key)

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(_with_header(client_call_details, self._header), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(_with_header(client_call_details, self._header), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(_with_header(client_call_details, self._header), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(_with_header(client_call_details, self._header), request_iterator)


def _aio_details(details: grpc.aio.ClientCallDetails, header: tuple[str, str]) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata.add(*header)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _AioBearerUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, header: tuple[str, str]) -> None:
        self._header = header

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(_aio_details(client_call_details, self._header), request)


class _AioBearerUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, header: tuple[str, str]) -> None:
        self._header = header

    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(_aio_details(client_call_details, self._header), request)


class _AioBearerStreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, header: tuple[str, str]) -> None:
        self._header = header

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(_aio_details(client_call_details, self._header), request_iterator)


def aio_bearer_interceptors(api_key: str) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors adding `authorization: Bearer <API key>` to every call of an asyncio channel (one per call
    kind: grpc.aio applies an interceptor only to the kinds it subclasses)."""
    header = bearer_header(api_key)
    return [_AioBearerUnaryUnary(header), _AioBearerUnaryStream(header), _AioBearerStreamUnary(header)]


def sync_channel(
    address: str, credentials: grpc.ChannelCredentials | None, api_key: str, options: list[tuple[str, Any]]
) -> grpc.Channel:
    """A synchronous channel to `address`, with the API key on every call when one is given."""
    if credentials is None:
        channel = grpc.insecure_channel(address, options=options)
    else:
        channel = grpc.secure_channel(address, credentials, options=options)
    return grpc.intercept_channel(channel, BearerToken(api_key)) if api_key else channel


def aio_channel(
    address: str, credentials: grpc.ChannelCredentials | None, api_key: str, options: list[tuple[str, Any]]
) -> grpc.aio.Channel:
    """An asyncio channel to `address`, with the API key on every call when one is given."""
    interceptors = aio_bearer_interceptors(api_key) if api_key else None
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(address, credentials, options=options, interceptors=interceptors)


class ClientBase:
    """What both clients hold, set up one way: where each service is (`endpoints`), one channel per distinct address
    (`channel` is the trainer's, the only one when one address serves everything), the three stubs, and the call
    settings. Subclasses name the kind of channel in `make_channel` (`sync_channel` or `aio_channel`)."""

    make_channel: Any = None

    def __init__(
        self,
        address: str | None = None,
        *,
        trainer_address: str | None = None,
        inference_address: str | None = None,
        gallery_address: str | None = None,
        api_key: str | None = None,
        tls_ca_file: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_reconnects: int = 10,
        reconnect_backoff: float = 0.2,
        retries: bool = True,
    ) -> None:
        self.endpoints = Endpoints.resolve(
            address,
            trainer_address=trainer_address,
            inference_address=inference_address,
            gallery_address=gallery_address,
        )
        self.address = self.endpoints.trainer
        secure = channel_credentials(tls_ca_file, credentials)
        key = api_key_or_env(api_key)
        options = channel_options(max_message_bytes, retries=retries)
        make_channel = type(self).make_channel
        self._channels = {target: make_channel(target, secure, key, options) for target in self.endpoints.distinct()}
        self.channel = self._channels[self.endpoints.trainer]
        self.trainer = trainer_grpc.TrainerServiceStub(self._channels[self.endpoints.trainer])
        self.inference = inference_grpc.InferenceServiceStub(self._channels[self.endpoints.inference])
        self.gallery = gallery_grpc.GalleryServiceStub(self._channels[self.endpoints.gallery])
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self.max_reconnects = max_reconnects
        self.reconnect_backoff = reconnect_backoff

    def _channel_of(self, service: str) -> Any:
        """The channel serving a fully qualified service name ("likeness.inference.v1.InferenceService"); the
        trainer's for "" (the whole server)."""
        for name in ("trainer", "inference", "gallery"):
            if f".{name}." in service.lower():
                return self._channels[getattr(self.endpoints, name)]
        return self.channel
