"""`likeness db status|upgrade`: the control-plane database's schema revision, and migrating it ahead of a rollout.

Every trainer process migrates on start-up anyway (under a lock); `upgrade` lets an operator do it once, as a
Kubernetes Job or by hand, before new replicas start, and `status` says where a database stands.
"""

from __future__ import annotations

import argparse

from likeness.server.settings import Settings, add_arguments, load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "db",
        help="control-plane database: schema status and upgrade",
        description="Show or upgrade the schema revision of the control-plane database (--database-url).",
    )
    parser.add_argument("action", choices=["status", "upgrade"], help="status: show revisions; upgrade: migrate")
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from likeness.controlplane.database import Database
    from likeness.controlplane.migrate import current_revision, head_revision, migrate

    settings: Settings = load_settings(args)
    database = Database(settings.resolved_database_url)
    try:
        if args.action == "upgrade":
            before = current_revision(database)
            after = migrate(database)
            print(f"{database.where}: {before or 'empty'} -> {after}")
        else:
            current, head = current_revision(database), head_revision()
            state = "up to date" if current == head else f"behind (this build's head is {head})"
            print(f"{database.where}: revision {current or 'none (empty database)'}, {state}")
    finally:
        database.dispose()
    return 0
