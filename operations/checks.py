"""What /readyz checks: every dependency the service needs to do its work."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from django.db import connection

from common.blobs import get_blob_store
from common.redis_client import redis_client
from nodes.registry import candidate_node_ids


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    duration_ms: float


def _timed(name: str, probe: Callable[[], str]) -> Check:
    started = time.perf_counter()
    try:
        detail, ok = probe(), True
    except Exception as exc:  # any failure of a dependency means "not ready"
        detail, ok = f"{type(exc).__name__}: {exc}"[:300], False
    return Check(name, ok, detail, round((time.perf_counter() - started) * 1000, 1))


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "reachable"


def _redis() -> str:
    redis_client().ping()
    return "reachable"


def _blob_store() -> str:
    return get_blob_store().check()


def _nodes() -> str:
    live = candidate_node_ids()
    if not live:
        raise RuntimeError("no pyannote node is online")
    return f"{len(live)} live: {', '.join(live)}"


def readiness() -> list[Check]:
    return [
        _timed("database", _database),
        _timed("redis", _redis),
        _timed("blob_store", _blob_store),
        _timed("nodes", _nodes),
    ]
