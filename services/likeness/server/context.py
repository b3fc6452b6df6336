"""Per-request context: the caller's tenant and request id, set by the interceptor for domain calls to read."""

from __future__ import annotations

import contextvars

from likeness.server.logs import request_id_var

#: Tenant of the RPC being served. Authentication is off, so every caller is the default tenant; an
#: authenticating interceptor would set it from the caller's identity without any change to the services.
DEFAULT_TENANT = "default"
tenant_var: contextvars.ContextVar[str] = contextvars.ContextVar("likeness_tenant", default=DEFAULT_TENANT)


def current_tenant() -> str:
    """Tenant whose data the current request may see and create."""
    return tenant_var.get()


def current_request_id() -> str:
    """Id of the current request, as logged and returned in the `x-request-id` trailer."""
    return request_id_var.get()
