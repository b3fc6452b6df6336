"""Opening the control-plane database: engines for SQLite and PostgreSQL, transactions, the database clock.

SQLite (the embedded default) runs in WAL mode, and every transaction starts with `BEGIN IMMEDIATE`, so writers
queue on the database lock instead of failing half-way through a read-then-write; that is what makes a claim
atomic on SQLite. PostgreSQL runs at READ COMMITTED; the statements that must not race lock rows
(`FOR UPDATE SKIP LOCKED`) or take a transaction-scoped advisory lock (`advisory_lock`).

Connection failures surface as `Unavailable` naming the database's host and never its password.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from likeness.errors import InvalidArgument, Unavailable

log = logging.getLogger("likeness.controlplane")

DEFAULT_DATABASE_URL = "sqlite:///var/likeness.db"
SQLITE_BUSY_TIMEOUT_SECONDS = 30


class db_now(FunctionElement[float]):
    """The database's clock in seconds since the epoch, as a SQL expression (one clock for every node)."""

    type = sa.Float(precision=53)
    inherit_cache = True


@compiles(db_now, "postgresql")
def _db_now_postgresql(element: db_now, compiler: object, **kw: object) -> str:
    return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"


@compiles(db_now, "sqlite")
def _db_now_sqlite(element: db_now, compiler: object, **kw: object) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"


def describe_url(url: URL) -> str:
    """Where a database is, for messages: host, port and database name; never the user or password."""
    if url.get_backend_name() == "sqlite":
        return f"sqlite file {url.database or ':memory:'}"
    port = f":{url.port}" if url.port else ""
    return f"{url.get_backend_name()} at {url.host or 'localhost'}{port}/{url.database or ''}"


def parse_database_url(text: str) -> URL:
    """A database URL checked for a backend this project supports; InvalidArgument otherwise."""
    try:
        url = make_url(text)
    except ArgumentError:
        raise InvalidArgument(
            "is not a database URL; use sqlite:///path/to/file.db or postgresql://user:password@host:5432/db",
            field="database_url",
        ) from None
    backend = url.get_backend_name()
    if backend == "postgresql":
        # psycopg 3 is the driver this project ships; a bare postgresql:// would ask for psycopg2.
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
    elif backend != "sqlite":
        raise InvalidArgument(f"backend {backend!r} is not supported; use sqlite or postgresql", field="database_url")
    if backend == "sqlite" and url.database in (None, "", ":memory:"):
        raise InvalidArgument(
            "an in-memory SQLite database is private to one connection; name a file", field="database_url"
        )
    return url


class Database:
    """An engine plus the transaction helpers every store uses."""

    def __init__(self, url: str | URL) -> None:
        self.url = parse_database_url(url) if isinstance(url, str) else url
        self.backend = self.url.get_backend_name()
        self.where = describe_url(self.url)
        self.engine = self._create_engine()

    @property
    def is_postgresql(self) -> bool:
        return self.backend == "postgresql"

    def _create_engine(self) -> Engine:
        if self.backend == "sqlite":
            Path(self.url.database or "").expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(
                self.url,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            )
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
            return engine
        try:
            return sa.create_engine(
                self.url,
                pool_pre_ping=True,  # a connection that died with the server is replaced, not handed out
                pool_size=10,
                max_overflow=20,
                pool_recycle=1800,
                connect_args={"connect_timeout": 5, "application_name": "likeness"},
            )
        except NoSuchModuleError:
            raise InvalidArgument(f"no driver for {self.url.drivername!r}", field="database_url") from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back on an error. A lost connection or a server
        that is down raises `Unavailable`."""
        with self._mapped_errors(), self.engine.begin() as connection:
            yield connection

    def insert(self, table: sa.Table) -> Any:
        """An INSERT of this backend's dialect, which has `on_conflict_do_nothing` / `on_conflict_do_update`."""
        if self.is_postgresql:
            from sqlalchemy.dialects.postgresql import insert as postgresql_insert

            return postgresql_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A transaction for reading only. On SQLite it begins DEFERRED, so readers run beside a writer (WAL)
        instead of queueing for the write lock that `transaction` takes."""
        with self._mapped_errors(), self.engine.connect() as connection:
            connection = connection.execution_options(likeness_read_only=True)
            with connection.begin():
                yield connection

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection whose transactions the caller manages (migrations); errors mapped as in `transaction`."""
        with self._mapped_errors(), self.engine.connect() as connection:
            yield connection

    @contextlib.contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        try:
            yield
        except (OperationalError, sa.exc.InterfaceError) as error:
            raise self.unavailable(error) from None
        except DBAPIError as error:
            if error.connection_invalidated:
                raise self.unavailable(error) from None
            raise

    def unavailable(self, error: Exception) -> Unavailable:
        # The driver's message can carry the DSN; log it here, tell the client only where the database is.
        log.warning("control-plane database error", extra={"database": self.where, "error": _first_line(error)})
        return Unavailable(f"the control-plane database ({self.where}) is unreachable; retry shortly")

    def ping(self) -> bool:
        """True when a query goes through."""
        try:
            with self.transaction() as connection:
                connection.execute(sa.select(1))
            return True
        except Unavailable:
            return False

    def advisory_lock(self, connection: Connection, name: str) -> None:
        """Serialises transactions that take the same lock (PostgreSQL; SQLite's BEGIN IMMEDIATE already does)."""
        if self.is_postgresql:
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(name)})

    def notify(self, connection: Connection, channel: str, payload: str = "") -> None:
        """Announces `channel` to listeners when the caller's transaction commits (PostgreSQL NOTIFY; on SQLite,
        where every process shares one file and the callers poll, nothing)."""
        if self.is_postgresql:
            connection.execute(
                sa.text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload}
            )

    def listen(self, channels: Sequence[str], on_notify: Callable[[str, str], None], stop: threading.Event) -> None:
        """Calls `on_notify(channel, payload)` for every notification on `channels` until `stop` is set; reconnects
        after a lost connection. PostgreSQL only (returns at once on SQLite). Runs on the caller's thread."""
        if not self.is_postgresql:
            return
        import psycopg

        dsn = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as connection:
                    for channel in channels:
                        connection.execute(f"LISTEN {channel}")
                    while not stop.is_set():
                        for notification in connection.notifies(timeout=1.0):
                            on_notify(notification.channel, notification.payload)
            except psycopg.Error as error:
                log.debug("listen connection lost; reconnecting", extra={"error": _first_line(error)})
                stop.wait(1.0)

    def dispose(self) -> None:
        self.engine.dispose()


def lock_key(name: str) -> int:
    """A stable 32-bit key for a named PostgreSQL advisory lock."""
    return zlib.crc32(f"likeness:{name}".encode())


def _first_line(error: Exception) -> str:
    return str(getattr(error, "orig", error)).strip().splitlines()[0][:300] if str(error) else type(error).__name__


def _sqlite_on_connect(dbapi_connection: object, _record: object) -> None:
    # pysqlite's own transaction handling would BEGIN lazily (DEFERRED); we emit BEGIN IMMEDIATE ourselves.
    dbapi_connection.isolation_level = None  # type: ignore[attr-defined]
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    read_only = connection.get_execution_options().get("likeness_read_only", False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
