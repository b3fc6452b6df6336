"""`likeness keys create|list|revoke`: API keys for operators, written straight to the control-plane database."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime, timezone

from likeness.cli.common import print_table
from likeness.errors import InvalidArgument
from likeness.server.settings import add_arguments, load_settings

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'90d', '12h', '30m' or '45s' in seconds."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise InvalidArgument(f"{text!r} is not a duration such as 90d, 12h or 30m", field="expires_in")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "keys",
        help="API keys: create, list, revoke (operators; needs --database-url)",
        description="Manage API keys in the control-plane database. A key is shown once, when it is created.",
    )
    actions = parser.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a key for a tenant and print it (once)")
    create.add_argument("--tenant", required=True, help="tenant the key acts for")
    # A flag, not --role: that name is the trainer's role setting, which every subcommand accepts.
    create.add_argument("--admin", action="store_true", help="role admin (operator RPCs) instead of user")
    create.add_argument("--name", default="", help="what the key is for, shown in listings")
    create.add_argument("--expires-in", help="lifetime such as 90d, 12h or 30m (default: no expiry)")
    listing = actions.add_parser("list", help="list keys with their state (never the keys themselves)")
    listing.add_argument("--tenant", help="only this tenant's keys")
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id", help="the id from `keys list` (the 12 hex digits after lk_)")
    for sub in (create, listing, revoke):
        add_arguments(sub)
        sub.set_defaults(func=run)


def _time(value: float | None) -> str:
    return "-" if value is None else datetime.fromtimestamp(value, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def run(args: argparse.Namespace) -> int:
    import time

    from likeness.controlplane.database import Database
    from likeness.controlplane.migrate import migrate
    from likeness.identity.keys import ApiKeys, Role

    settings = load_settings(args)
    database = Database(settings.resolved_database_url)
    try:
        migrate(database)
        keys = ApiKeys(database)
        if args.keys_action == "create":
            expires = parse_duration(args.expires_in) if args.expires_in else None
            role = Role.ADMIN if args.admin else Role.USER
            record, key = keys.create(args.tenant, role, name=args.name, expires_in=expires)
            print(key)
            print(
                f"key {record.key_id} for tenant {record.tenant!r} ({record.role.value}), expires "
                f"{_time(record.expire_time)}. It is shown only now; store it as a secret.",
                file=sys.stderr,
            )
        elif args.keys_action == "list":
            now = time.time()
            rows = [
                [r.key_id, r.tenant, r.role.value, r.state(now), _time(r.create_time), _time(r.expire_time), r.name]
                for r in keys.list(args.tenant)
            ]
            print_table(rows, ["key id", "tenant", "role", "state", "created", "expires", "name"])
        else:
            record = keys.revoke(args.key_id.removeprefix("lk_").split("_")[0])
            print(f"revoked {record.key_id} of tenant {record.tenant!r} at {_time(record.revoke_time)}")
    finally:
        database.dispose()
    return 0
