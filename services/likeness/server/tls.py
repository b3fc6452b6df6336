"""TLS for the gRPC and metrics ports from mounted certificate files, reloaded when they rotate.

cert-manager and Kubernetes Secrets replace the mounted files in place; a server must pick the new certificate
up without a restart. gRPC asks for the certificate configuration on every new handshake
(`dynamic_ssl_server_credentials`); the callback answers with a new one only when a file's modification time or
size changed, so the check costs three `stat` calls. The metrics port reloads the same files into its SSL
context from a watcher thread.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from likeness.errors import FailedPrecondition

log = logging.getLogger(__name__)

WATCH_SECONDS = 10.0


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the server's certificate chain and key, and optionally a CA whose client certificates it requires."""

    cert_file: str
    key_file: str
    client_ca_file: str = ""

    def paths(self) -> list[str]:
        return [path for path in (self.cert_file, self.key_file, self.client_ca_file) if path]

    def fingerprint(self) -> tuple:
        """What changes when a file is replaced (modification time and size of each)."""
        marks: list[tuple[Any, ...]] = []
        for path in self.paths():
            try:
                status = os.stat(path)
            except OSError:
                marks.append((path, None))
            else:
                marks.append((path, status.st_mtime_ns, status.st_size))
        return tuple(marks)

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        """The certificate chain, key and client CA; FailedPrecondition naming the setting when one is unreadable."""
        contents = []
        for setting, path in (("tls_cert_file", self.cert_file), ("tls_key_file", self.key_file)):
            contents.append(_read(path, setting))
        ca = _read(self.client_ca_file, "tls_client_ca_file") if self.client_ca_file else None
        return contents[0], contents[1], ca


def _read(path: str, setting: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise FailedPrecondition(f"cannot read {path}: {error.strerror}", field=setting) from None
    if b"-----BEGIN" not in data:
        raise FailedPrecondition(f"{path} is not a PEM file", field=setting)
    return data


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """gRPC server credentials that reload the files on the first handshake after they change."""

    def configuration() -> grpc.ServerCertificateConfiguration:
        cert, key, ca = files.read()
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    state = {"fingerprint": files.fingerprint()}
    lock = threading.Lock()

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        with lock:
            current = files.fingerprint()
            if current == state["fingerprint"]:
                return None
            try:
                fresh = configuration()
            except FailedPrecondition as error:  # mid-rotation (one file written, not the other): keep the old
                log.warning("TLS certificate not reloaded: %s", error.message)
                return None
            state["fingerprint"] = current
            log.info("TLS certificate reloaded", extra={"cert_file": files.cert_file})
            return fresh

    return grpc.dynamic_ssl_server_credentials(
        configuration(), fetch, require_client_authentication=bool(files.client_ca_file)
    )


def watch_ssl_context(context: ssl.SSLContext, files: TlsFiles, stop: threading.Event) -> threading.Thread:
    """Reload the certificate chain into `context` (the metrics port's) when the files change."""

    def run() -> None:
        seen = files.fingerprint()
        while not stop.wait(WATCH_SECONDS):
            current = files.fingerprint()
            if current == seen:
                continue
            try:
                context.load_cert_chain(files.cert_file, files.key_file)
            except (OSError, ssl.SSLError) as error:
                log.warning("metrics TLS certificate not reloaded: %s", error)
                continue
            seen = current
            log.info("metrics TLS certificate reloaded", extra={"cert_file": files.cert_file})

    thread = threading.Thread(target=run, name="likeness-tls-watch", daemon=True)
    thread.start()
    return thread
