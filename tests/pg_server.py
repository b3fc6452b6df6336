"""A throw-away PostgreSQL server for the test suite.

`PostgresServer` runs its own cluster (``initdb`` + ``pg_ctl``) in a temporary directory, listening on a free TCP
port on 127.0.0.1 only, with password (SCRAM) authentication and settings that trade durability for speed. The
server refuses to run as root, so when the tests run as root (CI) the data directory is handed to the ``postgres``
user (or ``nobody``) and the server binaries run under that uid via ``setpriv``/``runuser``.

    server = PostgresServer()
    server.start()
    url = server.fresh_database()  # postgresql+psycopg://likeness_admin:...@127.0.0.1:PORT/t_...
    server.stop(); server.start()  # same port, same data: simulates the database going away and coming back
    server.close()                 # stops the server and removes the data directory
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

__all__ = ["PostgresServer", "PostgresUnavailable", "find_bindir"]

_COMMAND_TIMEOUT_S = 60
_FAST_SETTINGS = (
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=200",
)
_names = itertools.count()


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries (initdb, pg_ctl, postgres) are not installed."""


def _version_key(path: str) -> tuple[int, ...]:
    match = re.search(r"/postgresql/([0-9.]+)/bin$", path)
    return tuple(int(part) for part in match.group(1).split(".") if part) if match else (0,)


def _has_server_binaries(bindir: str | os.PathLike[str]) -> bool:
    return all(os.access(os.path.join(bindir, name), os.X_OK) for name in ("initdb", "pg_ctl", "postgres"))


def find_bindir() -> Path:
    """The directory holding initdb/pg_ctl/postgres: the newest /usr/lib/postgresql/*/bin, else
    ``pg_config --bindir``, else wherever ``initdb`` is on PATH. Raises `PostgresUnavailable` if none has them."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, check=True
            ).stdout.strip()
            if out:
                candidates.append(out)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(os.path.dirname(initdb))
    for candidate in candidates:
        if _has_server_binaries(candidate):
            return Path(candidate)
    raise PostgresUnavailable(
        "no initdb/pg_ctl/postgres found in /usr/lib/postgresql/*/bin, `pg_config --bindir` or PATH"
    )


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


class PostgresServer:
    """One private PostgreSQL cluster. Attributes: ``host``, ``port``, ``user``, ``password``, ``bindir``,
    ``base_dir`` (temporary directory), ``data_dir``, ``log_file``. Create it, then `start()`."""

    def __init__(
        self,
        *,
        user: str = "likeness_admin",
        host: str = "127.0.0.1",
        port: int | None = None,
        settings: Sequence[str] = (),
    ) -> None:
        """`settings`: extra `name=value` server settings (benchmarks size shared_buffers like a real server)."""
        self.bindir: Path = find_bindir()
        self.settings = tuple(settings)
        self.host = host
        self.user = user
        self.password = secrets.token_hex(16)
        self.port: int = port or _free_port(host)
        self.base_dir: Path | None = None
        self.data_dir: Path | None = None
        self.log_file: Path | None = None
        self._run_as: tuple[int, int, str] | None = None  # (uid, gid, name) when running as root
        self._initialized = False
        self._running = False
        self._closed = False
        self._started_once = False
        atexit.register(self.close)

    # -- lifecycle ------------------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> PostgresServer:
        """Starts the server (creating the cluster on first use); again after `stop()` on the same port and data."""
        if self._closed:
            raise RuntimeError("PostgresServer is closed")
        if self._running:
            return self
        if not self._initialized:
            self._init_cluster()
        attempts = 1 if self._started_once else 3
        for attempt in range(attempts):
            try:
                self._pg_ctl_start()
                break
            except RuntimeError:
                # The free port was taken between picking and binding: pick another (only before the first start;
                # afterwards the port is part of the URLs the tests hold).
                if attempt + 1 < attempts and _port_in_use(self.host, self.port):
                    self.port = _free_port(self.host)
                    continue
                raise
        self._started_once = True
        self._running = True
        return self

    def stop(self) -> None:
        """Fast shutdown (``pg_ctl stop -m fast -w``); the data directory stays for `start()`."""
        if not self._initialized or not self._running:
            return
        self._pg_ctl("stop", "-m", "fast", "-w", "-t", str(_COMMAND_TIMEOUT_S))
        self._running = False

    def close(self) -> None:
        """Stops the server (however it can) and removes the temporary directory. Idempotent; never raises."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        if self._initialized and self.data_dir is not None and (self.data_dir / "postmaster.pid").exists():
            for mode in ("fast", "immediate"):
                try:
                    self._pg_ctl("stop", "-m", mode, "-w", "-t", "20")
                    break
                except Exception:
                    continue
            else:
                self._kill_postmaster()
        self._running = False
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- databases ------------------------------------------------------------------------------------------------

    def url(self, database: str) -> str:
        """SQLAlchemy URL (psycopg 3 driver) for `database` on this server, as the superuser."""
        return (
            f"postgresql+psycopg://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{quote(database, safe='')}"
        )

    def connect(self, database: str = "postgres", **kwargs: object):
        """A psycopg connection to `database` (autocommit unless told otherwise)."""
        import psycopg

        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("connect_timeout", 10)
        return psycopg.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=database, **kwargs
        )

    def create_database(self, name: str) -> str:
        """Creates database `name` (which must not exist yet) and returns its SQLAlchemy URL."""
        from psycopg import sql

        with self.connect("postgres") as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def fresh_database(self, prefix: str = "t") -> str:
        """Creates a database with a unique name starting with `prefix` and returns its SQLAlchemy URL."""
        name = f"{prefix}_{os.getpid()}_{next(_names)}_{uuid.uuid4().hex[:8]}".lower()
        return self.create_database(name[:63])

    # -- internals ------------------------------------------------------------------------------------------------

    def _init_cluster(self) -> None:
        base = tempfile.mkdtemp(prefix="likeness-pg-", dir=self._temp_parent())
        self.base_dir = Path(base)
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "server.log"
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            self._run_as = self._unprivileged_user()
            uid, gid, _ = self._run_as
            os.chown(base, uid, gid)
            os.chown(pwfile, uid, gid)
        os.chmod(pwfile, 0o600)
        try:
            self._run(
                str(self.bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                self.user,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
                what="initdb",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        self._initialized = True

    def _pg_ctl_start(self) -> None:
        assert self.data_dir is not None and self.log_file is not None
        options = [
            f"-c listen_addresses={self.host}",
            f"-p {self.port}",
            f"-c unix_socket_directories='{self.data_dir}'",
            *(f"-c {setting}" for setting in (*_FAST_SETTINGS, *self.settings)),
        ]
        self._pg_ctl("start", "-w", "-t", str(_COMMAND_TIMEOUT_S), "-l", str(self.log_file), "-o", " ".join(options))

    def _pg_ctl(self, *args: str) -> None:
        assert self.data_dir is not None
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), *args, what=f"pg_ctl {args[0]}")

    def _run(self, *argv: str, what: str) -> None:
        command = list(argv)
        if self._run_as is not None:
            uid, gid, name = self._run_as
            if shutil.which("setpriv"):
                command = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", "--", *command]
            elif shutil.which("runuser"):
                command = ["runuser", "-u", name, "--", *command]
            else:
                raise RuntimeError("running as root but neither setpriv nor runuser is available to drop privileges")
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env["LC_ALL"] = "C"
        env.pop("LANG", None)
        if self._run_as is not None:
            env["HOME"] = str(self.base_dir)
        try:
            result = subprocess.run(
                command,
                cwd=self.base_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_COMMAND_TIMEOUT_S + 30,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"PostgreSQL {what} timed out{self._log_tail()}") from exc
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise RuntimeError(f"PostgreSQL {what} failed (exit {result.returncode}): {output}{self._log_tail()}")

    def _log_tail(self, lines: int = 30) -> str:
        if self.log_file is None:
            return ""
        try:
            tail = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\nserver log:\n" + "\n".join(tail) if tail else ""

    def _kill_postmaster(self) -> None:
        assert self.data_dir is not None
        with contextlib.suppress(Exception):
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGQUIT)
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)

    @staticmethod
    def _unprivileged_user() -> tuple[int, int, str]:
        for name in ("postgres", "nobody"):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            return entry.pw_uid, entry.pw_gid, name
        raise RuntimeError("running as root and neither a `postgres` nor a `nobody` user exists to run PostgreSQL")

    @staticmethod
    def _temp_parent() -> str | None:
        """The default temp dir, unless running as root and an unprivileged user cannot reach it (then /tmp)."""
        if os.geteuid() != 0:
            return None
        parent = Path(tempfile.gettempdir()).resolve()
        for directory in (parent, *parent.parents):
            if not directory.stat().st_mode & 0o001:
                return "/tmp"
        return None
