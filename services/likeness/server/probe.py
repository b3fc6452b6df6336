"""A gRPC health probe for Kubernetes `exec` probes: `python -m likeness.server.probe --port 50051`.

The kubelet's native `grpc:` probes cannot speak TLS, so with TLS on (deploy/components/tls) the Deployments run
this instead. It calls `grpc.health.v1.Health/Check` on the local server and exits 0 when the answer is SERVING,
else 1 with a one-line reason on stderr.

It runs every few seconds in every pod, so it imports only grpc, grpc_health and the standard library (no torch,
nothing of likeness beyond this module); tests/server/test_probe.py checks that.

TLS is used when `--tls-ca` is given, with `--tls`, or when the environment says the server beside it serves TLS
(LIKENESS_TLS_CERT_FILE is set; an exec probe inherits the container's environment); `--plaintext` forces plaintext.
The CA that verifies the server is `--tls-ca`, else $LIKENESS_TLS_CA_FILE, else the mounted CA
(/etc/likeness/tls/ca.crt) if it exists, else the system roots. The certificate must be valid for
`--tls-server-name` (default localhost). When the server requires client certificates
(LIKENESS_TLS_CLIENT_CA_FILE is set), the probe presents `--tls-cert`/`--tls-key`, by default the server's own
LIKENESS_TLS_CERT_FILE and LIKENESS_TLS_KEY_FILE.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

# gRPC's core logs a failed handshake on lines of its own; the probe's one-line reason says it already. Read when
# grpc is imported, so set first; an operator's own GRPC_VERBOSITY wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

#: Where deploy/components/tls mounts the Secret likeness-tls (keys tls.crt, tls.key, ca.crt).
MOUNTED_TLS_DIR = "/etc/likeness/tls"
MOUNTED_CA_FILE = f"{MOUNTED_TLS_DIR}/ca.crt"

SERVING = health_pb2.HealthCheckResponse.SERVING


class ProbeError(Exception):
    """Why the probe fails, in one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # Any failure is exit status 1 with one line, usage errors included (argparse would exit 2 with a usage).
        raise ProbeError(f"usage: {message}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = _Parser(prog="python -m likeness.server.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=50051, help="gRPC port of the local server (default 50051)")
    parser.add_argument("--host", default="127.0.0.1", help="address to dial (default 127.0.0.1)")
    parser.add_argument("--service", default="", help="service to check (default: the server as a whole)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--tls", dest="tls", action="store_true", default=None, help="connect with TLS")
    mode.add_argument("--plaintext", dest="tls", action="store_false", help="connect without TLS")
    parser.add_argument("--tls-ca", default="", help="PEM CA verifying the server (implies --tls)")
    parser.add_argument("--tls-server-name", default="localhost", help="name the server certificate must be valid for")
    parser.add_argument("--tls-cert", default="", help="PEM client certificate, for a server requiring mutual TLS")
    parser.add_argument("--tls-key", default="", help="PEM key of --tls-cert")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer (default 2)")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        raise ProbeError(f"usage: --timeout must be positive, got {args.timeout}")
    return args


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise ProbeError(f"cannot read {what} {path}: {error.strerror}") from None


def channel_credentials(args: argparse.Namespace, environ: dict[str, str]) -> grpc.ChannelCredentials | None:
    """TLS credentials, or None for plaintext (see the module doc for how the choice and the files are made)."""
    tls = args.tls
    if tls is None:
        tls = bool(args.tls_ca or environ.get("LIKENESS_TLS_CERT_FILE"))
    if not tls:
        return None
    ca_file = args.tls_ca or environ.get("LIKENESS_TLS_CA_FILE", "")
    if not ca_file and os.path.exists(MOUNTED_CA_FILE):
        ca_file = MOUNTED_CA_FILE
    roots = _read(ca_file, "CA file") if ca_file else None
    cert_file, key_file = args.tls_cert, args.tls_key
    if not cert_file and environ.get("LIKENESS_TLS_CLIENT_CA_FILE"):
        cert_file = environ.get("LIKENESS_TLS_CERT_FILE", "")
        key_file = key_file or environ.get("LIKENESS_TLS_KEY_FILE", "")
    if bool(cert_file) != bool(key_file):
        raise ProbeError("usage: give --tls-cert and --tls-key together")
    chain = _read(cert_file, "client certificate") if cert_file else None
    key = _read(key_file, "client key") if key_file else None
    return grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=chain)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def check(args: argparse.Namespace, environ: dict[str, str]) -> str:
    """Asks the server; returns a description when it is SERVING, raises ProbeError otherwise."""
    credentials = channel_credentials(args, environ)
    target = f"{args.host}:{args.port}"
    options = [("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0)]
    if credentials is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        options.append(("grpc.ssl_target_name_override", args.tls_server_name))
        channel = grpc.secure_channel(target, credentials, options=options)
    what = f"service {args.service!r}" if args.service else "the server"
    scheme = "TLS" if credentials is not None else "plaintext"
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as error:
            code = error.code() if hasattr(error, "code") else None
            details = error.details() if hasattr(error, "details") else str(error)
            name = code.name if code is not None else "ERROR"
            if code == grpc.StatusCode.NOT_FOUND:
                raise ProbeError(f"{what} is unknown to the server at {target} (NOT_FOUND)") from None
            raise ProbeError(f"health check of {what} at {target} ({scheme}) failed: {name}: {details}") from None
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    if response.status != SERVING:
        raise ProbeError(f"{what} at {target} is {status}")
    return f"{what} at {target} ({scheme}) is {status}"


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    environ = dict(os.environ) if environ is None else environ
    try:
        check(parse_args(argv), environ)
    except ProbeError as error:
        print(f"probe: {_one_line(str(error))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
