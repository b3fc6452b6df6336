"""TLS on the gRPC and metrics ports from certificate files, reloaded when they rotate; clients over TLS with a key."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from tls_certs import make_certificates, make_client_certificate

from likeness.controlplane.database import Database
from likeness.controlplane.migrate import migrate
from likeness.errors import FailedPrecondition, InvalidArgument, Unauthenticated, Unavailable
from likeness.gallery.service import GalleryComponent
from likeness.identity.keys import ApiKeys
from likeness.server import metrics
from likeness.server.settings import Settings, validate
from likeness.server.testing import serve_components
from likeness.server.tls import TlsFiles
from likeness_client import LikenessClient


def grpcurl() -> str | None:
    path = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    return path if Path(path).exists() else None


def test_grpc_over_tls_with_a_key_and_certificate_rotation(tmp_path) -> None:
    first = make_certificates(tmp_path / "certs", "first")
    database = Database(f"sqlite:///{tmp_path / 'likeness.db'}")
    migrate(database)
    _, key = ApiKeys(database).create("acme")
    database.dispose()
    settings = Settings(
        storage_url=str(tmp_path / "storage"),
        cache_dir=str(tmp_path / "cache"),
        database_url=f"sqlite:///{tmp_path / 'likeness.db'}",
        auth="api-key",
        tls_cert_file=str(first.cert_file),
        tls_key_file=str(first.key_file),
    )

    def calls(address: str) -> None:
        with LikenessClient(address, api_key=key, tls_ca_file=str(first.ca_file)) as client:
            assert client.record_prompt("a lighthouse over TLS").prompt.prompt_id
        plaintext = LikenessClient(address, api_key=key, tls_ca_file="", timeout=3, max_reconnects=0)
        with plaintext, pytest.raises(Unavailable):
            plaintext.search_prompts("lighthouse")
        tool = grpcurl()
        if tool:
            method = [address, "likeness.gallery.v1.GalleryService/SearchPrompts"]
            data = ["-d", '{"query": "lighthouse"}']
            keyed = subprocess.run(
                [tool, "-cacert", str(first.ca_file), "-H", f"authorization: Bearer {key}", *data, *method],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert keyed.returncode == 0 and "lighthouse over TLS" in keyed.stdout, keyed.stderr
            bare = subprocess.run(
                [tool, "-cacert", str(first.ca_file), *data, *method], capture_output=True, text=True, timeout=30
            )
            assert "Unauthenticated" in bare.stdout + bare.stderr
        # Rotation: new files in place (a new CA, so only the new certificate verifies); new connections use them.
        second = make_certificates(tmp_path / "rotated", "second")
        for source, target in ((second.cert_file, first.cert_file), (second.key_file, first.key_file)):
            os.replace(source, target)
        time.sleep(0.05)
        with LikenessClient(address, api_key=key, tls_ca_file=str(second.ca_file)) as client:
            assert client.search_prompts("lighthouse").results

    async def main() -> None:
        async with serve_components([GalleryComponent(settings)], settings) as running:
            await asyncio.to_thread(calls, running.address)

    asyncio.run(main())


def test_client_certificates_name_the_tenant_of_callers_without_a_key(tmp_path) -> None:
    certs = make_certificates(tmp_path / "certs", "mtls")
    database = Database(f"sqlite:///{tmp_path / 'likeness.db'}")
    migrate(database)
    _, beta_key = ApiKeys(database).create("beta")
    database.dispose()
    settings = Settings(
        storage_url=str(tmp_path / "storage"),
        cache_dir=str(tmp_path / "cache"),
        database_url=f"sqlite:///{tmp_path / 'likeness.db'}",
        auth="api-key",
        tls_cert_file=str(certs.cert_file),
        tls_key_file=str(certs.key_file),
        tls_client_ca_file=str(certs.ca_file),
        mtls_tenants=True,
    )

    def credentials(common_name: str) -> grpc.ChannelCredentials:
        cert_file, key_file = make_client_certificate(certs, tmp_path / "certs", common_name)
        return grpc.ssl_channel_credentials(certs.ca_file.read_bytes(), key_file.read_bytes(), cert_file.read_bytes())

    def calls(address: str) -> None:
        with LikenessClient(address, api_key="", credentials=credentials("acme")) as acme:
            acme.record_prompt("an acme lighthouse")
            assert [r.prompt.prompt for r in acme.search_prompts("lighthouse").results] == ["an acme lighthouse"]
        # A key still wins over the certificate: the same certificate with beta's key acts as beta.
        with LikenessClient(address, api_key=beta_key, credentials=credentials("acme")) as beta:
            assert beta.search_prompts("lighthouse").results == []
        odd = LikenessClient(address, api_key="", credentials=credentials("Not A Tenant"))
        with odd, pytest.raises(Unauthenticated, match="common name"):
            odd.search_prompts("lighthouse")
        no_certificate = grpc.ssl_channel_credentials(certs.ca_file.read_bytes())
        bare = LikenessClient(address, api_key=beta_key, credentials=no_certificate, timeout=3, max_reconnects=0)
        with bare, pytest.raises(Unavailable):  # the handshake itself fails: no client certificate
            bare.search_prompts("lighthouse")

    async def main() -> None:
        async with serve_components([GalleryComponent(settings)], settings) as running:
            await asyncio.to_thread(calls, running.address)

    asyncio.run(main())


def test_metrics_over_tls(tmp_path) -> None:
    certs = make_certificates(tmp_path, "metrics")
    port = metrics.start_metrics_server(0, "127.0.0.1", tls=TlsFiles(str(certs.cert_file), str(certs.key_file)))
    context = ssl.create_default_context(cafile=str(certs.ca_file))
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", context=context, timeout=10) as response:
        assert response.status == 200 and b"likeness_" in response.read()


def test_bad_tls_settings_name_the_setting(tmp_path) -> None:
    with pytest.raises(InvalidArgument, match="tls_key_file"):
        validate(Settings(tls_cert_file=str(tmp_path / "cert.pem")))
    with pytest.raises(InvalidArgument, match="tls_client_ca_file"):
        validate(Settings(tls_client_ca_file=str(tmp_path / "ca.pem")))
    (tmp_path / "not.pem").write_text("hello")
    with pytest.raises(FailedPrecondition, match="tls_cert_file"):
        TlsFiles(str(tmp_path / "missing.pem"), str(tmp_path / "not.pem")).read()
    with pytest.raises(FailedPrecondition, match="not a PEM"):
        TlsFiles(str(tmp_path / "not.pem"), str(tmp_path / "not.pem")).read()
