"""API keys in the control-plane database: created (shown once), listed, revoked, verified.

A key reads `lk_<key id>_<secret>`: the key id (12 hex digits) identifies it in listings and logs, the secret
is 256 random bits. Only the SHA-256 of the whole key is stored. Verification hashes what the caller sent and
looks the hash up (a unique index), so the secret is never compared in Python at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from likeness.controlplane.database import Database
from likeness.controlplane.schema import api_keys
from likeness.enums import ValueEnum
from likeness.errors import InvalidArgument, NotFound, Unauthenticated
from likeness.storage.layout import validate_tenant

KEY_PREFIX = "lk"
_KEY_PATTERN = re.compile(r"^lk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
MAX_NAME_CHARS = 200


class Role(ValueEnum):
    """What a key may do: `user` works within its tenant; `admin` may also run operator RPCs."""

    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    tenant: str
    role: Role
    key_id: str  # "" when authentication is off


@dataclass(frozen=True)
class ApiKeyRecord:
    key_id: str
    tenant: str
    role: Role
    name: str
    create_time: float
    expire_time: float | None
    revoke_time: float | None

    def state(self, now: float) -> str:
        if self.revoke_time is not None:
            return "revoked"
        if self.expire_time is not None and self.expire_time <= now:
            return "expired"
        return "active"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _record(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=row.key_id,
        tenant=row.tenant,
        role=Role(row.role),
        name=row.name,
        create_time=float(row.create_time),
        expire_time=None if row.expire_time is None else float(row.expire_time),
        revoke_time=None if row.revoke_time is None else float(row.revoke_time),
    )


class ApiKeys:
    """The key table. Thread-safe (every call is its own transaction)."""

    def __init__(self, database: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self._clock = clock

    def create(
        self, tenant: str, role: Role | str = Role.USER, *, name: str = "", expires_in: float | None = None
    ) -> tuple[ApiKeyRecord, str]:
        """A new key of `tenant`; returns its record and the key itself, which is not stored and never shown again."""
        validate_tenant(tenant)
        try:
            role = Role(role)
        except ValueError:
            raise InvalidArgument(f"must be one of {', '.join(r.value for r in Role)}", field="role") from None
        if not isinstance(name, str) or len(name) > MAX_NAME_CHARS or not name.isprintable():
            raise InvalidArgument(f"must be printable text of at most {MAX_NAME_CHARS} characters", field="name")
        if expires_in is not None and not expires_in > 0:
            raise InvalidArgument("must be a positive number of seconds", field="expires_in")
        key_id = secrets.token_hex(6)
        key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        now = self._clock()
        record = ApiKeyRecord(
            key_id=key_id,
            tenant=tenant,
            role=role,
            name=name,
            create_time=now,
            expire_time=None if expires_in is None else now + expires_in,
            revoke_time=None,
        )
        values = {**dataclasses.asdict(record), "role": role.value, "secret_hash": hash_key(key)}
        with self.database.transaction() as connection:
            connection.execute(api_keys.insert().values(**values))
        return record, key

    def list(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        """Every key (of one tenant), oldest first; revoked and expired ones included, with their state."""
        query = sa.select(api_keys).order_by(api_keys.c.create_time, api_keys.c.key_id)
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        with self.database.read() as connection:
            return [_record(row) for row in connection.execute(query)]

    def revoke(self, key_id: str) -> ApiKeyRecord:
        """Revoke a key by its id (the `lk_<key id>_...` part). Revoking twice keeps the first revocation time."""
        with self.database.transaction() as connection:
            connection.execute(
                api_keys.update()
                .where(api_keys.c.key_id == key_id, api_keys.c.revoke_time.is_(None))
                .values(revoke_time=self._clock())
            )
            row = connection.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).one_or_none()
        if row is None:
            raise NotFound(f"API key {key_id!r} does not exist; `likeness keys list` shows the key ids")
        return _record(row)

    def verify(self, key: str) -> Principal:
        """The caller a key belongs to; Unauthenticated (saying why, never echoing the key) otherwise."""
        if not _KEY_PATTERN.match(key):
            raise Unauthenticated(
                "the API key is malformed; send 'authorization: Bearer lk_...' with a key from `likeness keys create`"
            )
        with self.database.read() as connection:
            row = connection.execute(sa.select(api_keys).where(api_keys.c.secret_hash == hash_key(key))).one_or_none()
        if row is None:
            raise Unauthenticated("the API key is not known; ask an operator for a key")
        record = _record(row)
        state = record.state(self._clock())
        if state != "active":
            raise Unauthenticated(f"the API key {record.key_id} is {state}; ask an operator for a new key")
        return Principal(record.tenant, record.role, record.key_id)
