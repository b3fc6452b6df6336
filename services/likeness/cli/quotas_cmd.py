"""`likeness quotas set|list`: per-tenant quota overrides for operators, written to the control-plane database.

The servers' defaults (`--quota-active-jobs`, `--quota-subject-models`, `--quota-images-per-minute`) apply to
every tenant without an override; replicas read a changed override within 30 s.
"""

from __future__ import annotations

import argparse

from likeness.cli.common import print_table
from likeness.errors import InvalidArgument
from likeness.identity.quotas import QuotaLimits
from likeness.server.settings import add_arguments, load_settings

#: CLI flag -> QuotaLimits field.
_FLAGS = {
    "active_jobs": "max_active_jobs",
    "subject_models": "max_subject_models",
    "images_per_minute": "images_per_minute",
}


CLEAR = "default"


def _limit(text: str) -> int | str:
    """An override: a number (0 = unlimited) or 'default' to clear it."""
    return CLEAR if text == CLEAR else int(text)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quotas",
        help="per-tenant quotas: set, list (operators; needs --database-url)",
        description="Override the servers' default quotas for one tenant. 0 is unlimited; 'default' clears.",
    )
    actions = parser.add_subparsers(dest="quotas_action", metavar="ACTION", required=True)
    setter = actions.add_parser("set", help="set or clear a tenant's overrides")
    setter.add_argument("--tenant", required=True, help="the tenant")
    setter.add_argument("--active-jobs", type=_limit, help="queued plus running training jobs")
    setter.add_argument("--subject-models", type=_limit, help="stored subject models (jobs in flight count)")
    setter.add_argument("--images-per-minute", type=_limit, help="images generated per minute")
    listing = actions.add_parser("list", help="tenants with overrides and their effective limits")
    for sub in (setter, listing):
        add_arguments(sub)
        sub.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from likeness.controlplane.database import Database
    from likeness.controlplane.migrate import migrate
    from likeness.identity.quotas import Quotas

    settings = load_settings(args)
    database = Database(settings.resolved_database_url)
    try:
        migrate(database)
        quotas = Quotas(database, settings.quota_limits, cache_seconds=0)
        if args.quotas_action == "set":
            changes = {
                field: None if getattr(args, flag) == CLEAR else getattr(args, flag)
                for flag, field in _FLAGS.items()
                if getattr(args, flag) is not None
            }
            if not changes:
                raise InvalidArgument("give at least one of --active-jobs, --subject-models, --images-per-minute")
            limits = quotas.set_override(args.tenant, **changes)
            print(f"tenant {args.tenant!r}: {_describe(limits)}")
        else:
            rows = [
                [
                    tenant,
                    _show(limits.max_active_jobs),
                    _show(limits.max_subject_models),
                    _show(limits.images_per_minute),
                ]
                for tenant, limits in quotas.overrides().items()
            ]
            print_table(rows, ["tenant", "active jobs", "subject models", "images/minute"])
            print(f"defaults: {_describe(settings.quota_limits)}")
    finally:
        database.dispose()
    return 0


def _show(value: int) -> str:
    return "unlimited" if value == 0 else str(value)


def _describe(limits: QuotaLimits) -> str:
    return (
        f"active jobs {_show(limits.max_active_jobs)}, subject models {_show(limits.max_subject_models)}, "
        f"images per minute {_show(limits.images_per_minute)}"
    )
