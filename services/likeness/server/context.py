"""Per-request context: the caller's tenant and request id, set by the interceptor for domain calls to read."""

from __future__ import annotations

import contextvars

from likeness.errors import PermissionDenied
from likeness.identity.keys import Principal, Role
from likeness.server.logs import request_id_var

#: Tenant of the RPC being served, set by the interceptor from the caller's credentials (likeness.server.auth);
#: with authentication off every caller is the default tenant.
DEFAULT_TENANT = "default"
tenant_var: contextvars.ContextVar[str] = contextvars.ContextVar("likeness_tenant", default=DEFAULT_TENANT)
#: The authenticated caller (tenant, role, key id) of the RPC being served; None outside an RPC.
principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("likeness_principal", default=None)


def current_tenant() -> str:
    """Tenant whose data the current request may see and create."""
    return tenant_var.get()


def current_request_id() -> str:
    """Id of the current request, as logged and returned in the `x-request-id` trailer."""
    return request_id_var.get()


def require_admin(action: str) -> Principal:
    """The caller, if its role is admin; PermissionDenied (naming `action`) for a user key."""
    principal = principal_var.get()
    if principal is None or principal.role is not Role.ADMIN:
        raise PermissionDenied(f"{action} needs an API key with the admin role (likeness keys create --admin)")
    return principal


def current_key_id() -> str:
    """The id of the caller's API key ("" with authentication off)."""
    principal = principal_var.get()
    return principal.key_id if principal is not None else ""
