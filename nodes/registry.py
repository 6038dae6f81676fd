"""The node registry in Redis: heartbeats of live pyannote nodes."""

from __future__ import annotations

import json
from functools import cache

import redis
from django.conf import settings

NODE_KEY_PREFIX = "scaiecho:node:"
PYANNOTE_ENGINE = "pyannote"


@cache
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)


def candidate_node_ids() -> list[str]:
    """Nodes whose heartbeat is alive and that run the pyannote engine."""
    client = redis_client()
    candidates = []
    for key in client.scan_iter(match=f"{NODE_KEY_PREFIX}*", count=500):
        raw = client.get(key)
        if raw is None:
            continue
        heartbeat = json.loads(raw)
        if heartbeat.get("engine") == PYANNOTE_ENGINE:
            candidates.append(str(heartbeat["node_id"]))
    return sorted(candidates)
