"""The test suite's private PostgreSQL server (tests/pg_server.py, fixtures in tests/conftest.py)."""

from __future__ import annotations

import pytest
import sqlalchemy
from pg_server import PostgresServer


def test_fresh_database_survives_a_server_restart(postgres_server: PostgresServer, postgres_url: str) -> None:
    assert postgres_url.startswith(f"postgresql+psycopg://{postgres_server.user}:")
    assert f"@127.0.0.1:{postgres_server.port}/" in postgres_url

    engine = sqlalchemy.create_engine(postgres_url, pool_pre_ping=True)
    try:
        with engine.begin() as conn:
            assert conn.execute(sqlalchemy.text("select 1")).scalar_one() == 1
            assert conn.execute(sqlalchemy.text("select current_user")).scalar_one() == postgres_server.user
            conn.execute(sqlalchemy.text("create table items (id integer primary key, name text not null)"))
            conn.execute(sqlalchemy.text("insert into items values (1, 'kept')"))

        postgres_server.stop()
        try:
            with pytest.raises(sqlalchemy.exc.OperationalError), engine.connect() as conn:
                conn.execute(sqlalchemy.text("select 1"))
        finally:
            postgres_server.start()

        # The pooled connection is dead; pre-ping replaces it, and the data is still there (same data dir and port).
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("select name from items where id = 1")).scalar_one() == "kept"
    finally:
        engine.dispose()


def test_wrong_password_is_refused(postgres_server: PostgresServer) -> None:
    import psycopg

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host=postgres_server.host,
            port=postgres_server.port,
            user=postgres_server.user,
            password="not-the-password",
            dbname="postgres",
            connect_timeout=5,
        )
