"""Schema migrations (Alembic), run on start-up under a lock so replicas that start together migrate once.

Every process that opens the database calls `migrate(database)`: it takes the migration lock (a PostgreSQL
advisory lock; on SQLite the write lock of BEGIN IMMEDIATE), reads the schema revision, refuses to start when the
database was migrated by newer code than this one, and otherwise upgrades to this code's head revision.
"""

from __future__ import annotations

import logging
from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from likeness.controlplane.database import Database, lock_key
from likeness.errors import FailedPrecondition

log = logging.getLogger("likeness.controlplane.migrate")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("likeness.controlplane") / "migrations"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def current_revision(database: Database) -> str | None:
    with database.transaction() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def migrate(database: Database) -> str:
    """Upgrades the schema to this code's head revision; returns it. FailedPrecondition for a newer schema."""
    config = alembic_config()
    head = head_revision()
    with database.connection() as connection:
        if database.is_postgresql:
            # Session-level lock on this connection, held across Alembic's transaction, released below.
            connection.exec_driver_sql(f"SELECT pg_advisory_lock({lock_key('migrate')})")
            connection.commit()
        try:
            with connection.begin():
                current = MigrationContext.configure(connection).get_current_revision()
                if current is not None and current not in known_revisions():
                    raise FailedPrecondition(
                        f"the control-plane database ({database.where}) has schema revision {current!r}, newer than "
                        f"this build knows (head {head!r}); run a release at least as new as the one that migrated it"
                    )
                if current != head:
                    log.info("migrating the control-plane database", extra={"from": current, "to": head})
                    config.attributes["connection"] = connection
                    command.upgrade(config, "head")
        finally:
            if database.is_postgresql:
                connection.exec_driver_sql(f"SELECT pg_advisory_unlock({lock_key('migrate')})")
                connection.commit()
    return head
