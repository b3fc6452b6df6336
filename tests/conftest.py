"""Suite-wide fixtures.

pytest (default ``prepend`` import mode, no ``__init__.py`` in tests/) puts this directory on ``sys.path`` when it
loads this file, so tests in any sub-folder can ``from pg_server import PostgresServer``.
"""

from __future__ import annotations

import os
import sys

import pytest

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if _TESTS_DIR not in sys.path:  # belt and braces for other import modes
    sys.path.insert(0, _TESTS_DIR)

# gateway_stack: the deployment-shaped layout behind one address (three service processes and nginx,
# tests/gateway.py), one per session for every test that asks for it.
from gateway import gateway_stack  # noqa: E402,F401
from pg_server import PostgresServer, PostgresUnavailable  # noqa: E402


@pytest.fixture(scope="session")
def postgres_server():
    """A started PostgreSQL server private to this test session (`pg_server.PostgresServer`), closed at the end."""
    try:
        server = PostgresServer()
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL server binaries not installed (Debian package postgresql): {exc}")
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """SQLAlchemy URL (postgresql+psycopg://...) of a fresh, empty database on the session's server."""
    if not postgres_server.running:  # a test stopped it and did not start it again
        postgres_server.start()
    return postgres_server.fresh_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path):
    """A migrated control-plane database: an SQLite file, or a fresh database on the session's PostgreSQL."""
    from likeness.controlplane.database import Database
    from likeness.controlplane.migrate import migrate

    url = (
        f"sqlite:///{tmp_path / 'likeness.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    db = Database(url)
    migrate(db)
    yield db
    db.dispose()
