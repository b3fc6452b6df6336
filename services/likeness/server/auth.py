"""Authentication of RPCs: who the caller is, from its `authorization: Bearer <API key>` metadata.

`--auth none` (the embedded default, logged as a warning at start) makes every caller the `default` tenant
with the admin role. `--auth api-key` (the Kubernetes overlays) requires a valid key on every RPC but health
and reflection; a verified key is cached for `auth_cache_seconds`, which bounds how long a revoked key keeps
working on a replica, so a busy server does not read the database on every call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Protocol

from likeness.controlplane.database import Database
from likeness.controlplane.migrate import migrate
from likeness.enums import ValueEnum
from likeness.errors import InvalidArgument, Unauthenticated
from likeness.identity.keys import ApiKeys, Principal, Role, hash_key
from likeness.server.context import DEFAULT_TENANT
from likeness.storage.layout import validate_tenant

log = logging.getLogger(__name__)

AUTHORIZATION_KEY = "authorization"
_CACHE_ENTRIES = 10_000
_REJECTION_CACHE_SECONDS = 2.0  # a flood of one bad key reads the database once per this interval


class AuthMode(ValueEnum):
    NONE = "none"
    API_KEY = "api-key"


class Authenticator(Protocol):
    async def start(self) -> None: ...

    async def authenticate(self, metadata: Mapping[str, str], certificate_name: str = "") -> Principal:
        """The caller, from its metadata and the common name of its verified client certificate ("" if none)."""
        ...

    def close(self) -> None: ...


class NoAuthentication:
    """Every caller is the default tenant, with the admin role."""

    PRINCIPAL = Principal(DEFAULT_TENANT, Role.ADMIN, "")

    async def start(self) -> None:
        log.warning(
            "authentication is off (--auth none): every caller is tenant %r; use --auth api-key", DEFAULT_TENANT
        )

    async def authenticate(self, metadata: Mapping[str, str], certificate_name: str = "") -> Principal:
        return self.PRINCIPAL

    def close(self) -> None:
        """Nothing to release."""


class ApiKeyAuthentication:
    """Bearer API keys verified against the control-plane database, with a short cache."""

    def __init__(self, database_url: str, *, cache_seconds: float = 30.0) -> None:
        self.database = Database(database_url)
        self.keys = ApiKeys(self.database)
        self.cache_seconds = cache_seconds
        self._cache: OrderedDict[str, tuple[float, Principal | Unauthenticated]] = OrderedDict()

    async def start(self) -> None:
        await asyncio.to_thread(migrate, self.database)  # the api_keys table, if no other service made it yet
        log.info("authentication: API keys", extra={"database": self.database.where})

    async def authenticate(self, metadata: Mapping[str, str], certificate_name: str = "") -> Principal:
        header = str(metadata.get(AUTHORIZATION_KEY, "")).strip()
        if not header:
            raise Unauthenticated("this server requires an API key: send the metadata 'authorization: Bearer lk_...'")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated("the authorization metadata must read 'Bearer <API key>'")
        digest = hash_key(key.strip())
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(digest)
            outcome = cached[1]
        else:
            try:
                outcome = await asyncio.to_thread(self.keys.verify, key.strip())
                ttl = self.cache_seconds
            except Unauthenticated as error:
                outcome, ttl = error, _REJECTION_CACHE_SECONDS
            self._cache[digest] = (now + ttl, outcome)
            while len(self._cache) > _CACHE_ENTRIES:
                self._cache.popitem(last=False)
        if isinstance(outcome, Unauthenticated):
            raise Unauthenticated(outcome.reason)
        return outcome

    def close(self) -> None:
        self.database.dispose()


class CertificateTenants:
    """Mutual TLS identities: a caller that sends no API key is the tenant its verified client certificate's
    common name names, with the user role (operators issue one certificate per tenant, e.g. with cert-manager).
    A caller that sends a key is authenticated by `inner` as usual, so admin work still needs an admin key."""

    def __init__(self, inner: Authenticator) -> None:
        self.inner = inner

    async def start(self) -> None:
        await self.inner.start()
        log.info("authentication: client certificates name the tenant of callers without an API key")

    async def authenticate(self, metadata: Mapping[str, str], certificate_name: str = "") -> Principal:
        if str(metadata.get(AUTHORIZATION_KEY, "")).strip() or not certificate_name:
            return await self.inner.authenticate(metadata, certificate_name)
        try:
            tenant = validate_tenant(certificate_name)
        except InvalidArgument:
            raise Unauthenticated(
                "the client certificate's common name is not a tenant name (lowercase letters, digits and '-')"
            ) from None
        return Principal(tenant, Role.USER, "")

    def close(self) -> None:
        self.inner.close()


def make_authenticator(
    mode: str, database_url: str, cache_seconds: float, *, certificate_tenants: bool = False
) -> Authenticator:
    inner: Authenticator = (
        ApiKeyAuthentication(database_url, cache_seconds=cache_seconds)
        if AuthMode(mode) is AuthMode.API_KEY
        else NoAuthentication()
    )
    return CertificateTenants(inner) if certificate_tenants else inner
