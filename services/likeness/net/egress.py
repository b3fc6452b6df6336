"""Outbound HTTP to URLs that callers name (webhook receivers, photo URLs): the one guard against server-side
request forgery.

A URL in a request could point at the cluster itself: the cloud metadata service (169.254.169.254), a database on
a private address, the pod's own loopback. `EgressPolicy.check_url` resolves the host once and refuses the URL when
any address it resolves to is not globally routable (loopback, link-local, RFC 1918 private, CGNAT, multicast,
unspecified, reserved, IPv6 unique-local and link-local, and those ranges inside IPv4-mapped, 6to4 and NAT64
addresses) or lies in the operator's deny list, unless the operator's allow list covers it (the deny list wins).
`post` and `fetch` then connect to that same checked address, with the URL's host name in the Host header and as
the TLS server name (the certificate is verified against the name), so a DNS answer that changes between the
check and the connection (DNS rebinding) reaches nothing new. `post` never follows redirects; `fetch` follows a
few, checking each new location the same way. Every call has one deadline for the whole exchange and reads at
most a set number of bytes.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from likeness.errors import InvalidArgument

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: (host, port) -> the addresses it resolves to, as strings; raises EgressUnresolved.
Resolver = Callable[[str, int], Sequence[str]]

MAX_URL_LENGTH = 2048
#: Redirect statuses `fetch` follows (with a Location header).
REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_MIB = 1024 * 1024


class EgressError(Exception):
    """An outbound request that could not be made or did not complete; the message says why (it never carries a
    header or a body of the request)."""


class EgressRefused(EgressError):
    """The URL, or an address its host resolves to, is not allowed: retrying cannot help."""


class EgressUnresolved(EgressError):
    """The URL's host name does not resolve (perhaps only for now)."""


class EgressTimeout(EgressError):
    """The exchange did not finish within its time limit."""


class EgressTooLarge(EgressError):
    """The answer is larger than the limit."""


class EgressFailed(EgressError):
    """Connection refused or reset, a TLS failure, a malformed answer, too many redirects."""


def parse_cidrs(text: str, *, field: str) -> tuple[IPNetwork, ...]:
    """Comma- or space-separated CIDR ranges (`10.0.0.0/8, fd00::/8`; a bare address is one host); InvalidArgument
    naming `field` for anything else."""
    networks: list[IPNetwork] = []
    for part in text.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise InvalidArgument(
                f"{part!r} is not a CIDR range such as 10.0.0.0/8, 127.0.0.1/32 or fd00::/8", field=field
            ) from None
    return tuple(networks)


def refusal_reason(address: IPAddress) -> str:
    """Why an address is not a destination by default: "" when it is globally routable."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return refusal_reason(embedded)
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (the range of the cloud metadata service)"
    if address.is_multicast:
        return "a multicast address"
    if address in _CGNAT:
        return "a shared (CGNAT) address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "an address that is not globally routable"
    return ""


def resolve_host(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (system resolver), in its order, without repeats."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        detail = getattr(error, "strerror", None) or str(error)
        raise EgressUnresolved(f"host {host!r} does not resolve ({detail})") from None
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise EgressUnresolved(f"host {host!r} resolves to no address")
    return addresses


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Target:
    """A checked URL: the addresses to connect to (all accepted by the policy) and what to ask for."""

    url: str
    scheme: str
    host: str
    port: int
    #: Path and query, as sent in the request line.
    path: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class EgressPolicy:
    """Which destinations outbound requests may reach.

    `allow` admits ranges that are refused by default (an internal receiver, a test server on 127.0.0.1);
    `deny` refuses more ranges (the cluster's own, when they are public addresses) and wins over `allow`.
    `allow_setting` and `deny_setting` name the operator's settings in messages. Without `plain_http`, http://
    URLs are accepted only to addresses in `allow`.
    """

    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()
    allow_setting: str = "the egress allow list"
    deny_setting: str = "the egress deny list"
    plain_http: bool = True
    resolver: Resolver = field(default=resolve_host, compare=False)

    def address_refusal(self, text: str) -> str:
        """Why this address may not be reached ("" when it may)."""
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 zone id ("fe80::1%eth0") is no part
        except ValueError:
            return "not an IP address"
        if any(address in network for network in self.deny):
            return f"in a range the operator refuses ({self.deny_setting})"
        if self.explicitly_allowed(address):
            return ""
        reason = refusal_reason(address)
        return f"{reason}, refused unless the operator allows it ({self.allow_setting})" if reason else ""

    def explicitly_allowed(self, address: IPAddress) -> bool:
        return any(address in network for network in self.allow)

    def check_url(self, url: str) -> Target:
        """Parses, resolves and checks a URL; EgressRefused (or EgressUnresolved) with the reason otherwise."""
        if len(url) > MAX_URL_LENGTH:
            raise EgressRefused(f"is longer than {MAX_URL_LENGTH} characters")
        try:
            parts = urlsplit(url.strip())
            port = parts.port
            hostname = parts.hostname
        except ValueError:
            raise EgressRefused("is not a valid URL (https://host/path)") from None
        scheme = parts.scheme.lower()
        if scheme not in ("https", "http"):
            raise EgressRefused(f"must be an https:// URL, not {scheme + '://' if scheme else 'one without a scheme'}")
        if not hostname:
            raise EgressRefused("names no host (https://host/path)")
        if parts.username is not None or parts.password is not None:
            raise EgressRefused("must not carry a user name or password")
        try:
            host = hostname.encode("idna").decode("ascii")
        except UnicodeError:
            raise EgressRefused(f"has a host name that is not valid: {hostname!r}") from None
        port = port or (443 if scheme == "https" else 80)
        addresses = (host,) if _is_ip_literal(host) else tuple(self.resolver(host, port))
        for address in addresses:
            reason = self.address_refusal(address)
            if reason:
                # The address a name resolves to is not shown: callers must not map the cluster's DNS with it.
                where = f"{host} is" if host == address else f"{host} resolves to"
                raise EgressRefused(f"{where} {reason}")
        if (
            scheme == "http"
            and not self.plain_http
            and not all(self.explicitly_allowed(ipaddress.ip_address(a.split("%", 1)[0])) for a in addresses)
        ):
            raise EgressRefused(
                f"must be an https:// URL (http:// only to addresses the operator allows, {self.allow_setting})"
            )
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return Target(url=url, scheme=scheme, host=host, port=port, path=path, addresses=addresses)


@dataclass(frozen=True)
class Response:
    """An answer: status, headers (names lower-cased) and the body read (within the limit)."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes


def post(
    policy: EgressPolicy,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    max_answer_bytes: int = 4096,
) -> Response:
    """POSTs `body` to a checked URL within `timeout` seconds; redirects are returned, not followed. The answer's
    body is read up to `max_answer_bytes` and the rest dropped."""
    deadline = time.monotonic() + timeout
    target = policy.check_url(url)
    return _exchange(target, "POST", body, headers, deadline, timeout, max_answer_bytes, truncate=True)


def fetch(
    policy: EgressPolicy,
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    max_redirects: int = 3,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """GETs a checked URL within `timeout` seconds overall, following up to `max_redirects` redirects (each new
    location checked again); EgressTooLarge when the body exceeds `max_bytes`."""
    deadline = time.monotonic() + timeout
    target = policy.check_url(url)
    for _ in range(max_redirects + 1):
        response = _exchange(target, "GET", None, headers or {}, deadline, timeout, max_bytes, truncate=False)
        location = response.headers.get("location", "")
        if response.status not in REDIRECTS or not location:
            return response
        target = policy.check_url(urljoin(target.url, location))
    raise EgressFailed(f"redirected more than {max_redirects} times")


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP or HTTPS to one resolved address, with the URL's host name as Host header and TLS server name."""

    def __init__(self, target: Target, address: str, timeout: float, tls: ssl.SSLContext | None) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        # The Host header leaves out the scheme's default port.
        self.default_port = 443 if tls is not None else 80
        self._address = address
        self._tls = tls

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        if self._tls is not None:
            sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        self.sock = sock


_tls_context: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    global _tls_context
    if _tls_context is None:
        _tls_context = ssl.create_default_context()
    return _tls_context


def _remaining(deadline: float, budget: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise EgressTimeout(f"did not finish within {budget:g} s")
    return remaining


def _exchange(
    target: Target,
    method: str,
    body: bytes | None,
    headers: Mapping[str, str],
    deadline: float,
    budget: float,
    max_bytes: int,
    *,
    truncate: bool,
) -> Response:
    tls = _tls() if target.scheme == "https" else None
    failure = ""
    for address in target.addresses:
        connection = _PinnedConnection(target, address, _remaining(deadline, budget), tls)
        try:
            try:
                connection.connect()
            except ssl.SSLCertVerificationError as error:
                raise EgressFailed(
                    f"the TLS certificate of {target.host} is not valid: {error.verify_message}"
                ) from None
            except TimeoutError:
                raise EgressTimeout(f"could not connect to {target.host} within {budget:g} s") from None
            except OSError as error:
                failure = f"cannot connect to {target.host} ({address}): {error.strerror or error}"
                continue  # the next address of the host, if it has one
            return _request(connection, target, method, body, headers, deadline, budget, max_bytes, truncate)
        except TimeoutError:
            raise EgressTimeout(f"{target.host} did not answer within {budget:g} s") from None
        except ssl.SSLError as error:
            raise EgressFailed(f"TLS with {target.host} failed: {error.reason or error}") from None
        except (http.client.HTTPException, OSError) as error:
            raise EgressFailed(f"the exchange with {target.host} failed: {type(error).__name__} {error}") from None
        finally:
            connection.close()
    raise EgressFailed(failure or f"{target.host} has no address to connect to")


def _request(
    connection: _PinnedConnection,
    target: Target,
    method: str,
    body: bytes | None,
    headers: Mapping[str, str],
    deadline: float,
    budget: float,
    max_bytes: int,
    truncate: bool,
) -> Response:
    def arm() -> None:
        if connection.sock is not None:
            connection.sock.settimeout(_remaining(deadline, budget))

    arm()
    connection.request(method, target.path, body=body, headers=dict(headers))
    arm()
    answer = connection.getresponse()
    answer_headers = {name.lower(): value for name, value in answer.getheaders()}
    if answer.status in REDIRECTS and method == "GET":
        return Response(answer.status, answer.reason, answer_headers, b"")
    length = answer_headers.get("content-length", "")
    if not truncate and length.isdigit() and int(length) > max_bytes:
        raise EgressTooLarge(f"is {int(length):,} bytes, over the {max_bytes / _MIB:g} MiB limit")
    chunks: list[bytes] = []
    total = 0
    while total <= max_bytes:
        arm()
        chunk = answer.read(min(64 * 1024, max_bytes + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    data = b"".join(chunks)
    if total > max_bytes:
        if not truncate:
            raise EgressTooLarge(f"is larger than the {max_bytes / _MIB:g} MiB limit")
        data = data[:max_bytes]
    return Response(answer.status, answer.reason, answer_headers, data)
