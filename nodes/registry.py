"""The node registry in Redis: heartbeats of live nodes and which nodes hold which speaker.

Redis holds only what can be rebuilt: a node republishes its heartbeat and its
warm entries from its own gallery, and PostgreSQL keeps every assignment.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields
from typing import Any

from django.conf import settings

from common.redis_client import redis_client

PYANNOTE_ENGINE = "pyannote"
# The pool of a node that names none, and of every tenant that NODE_POOLS does not place.
DEFAULT_POOL = "default"
NODES_KEY = "scaiecho:nodes"


def heartbeat_key(node_id: str) -> str:
    return f"scaiecho:node:{node_id}"


def warm_key(speaker_id: str) -> str:
    return f"scaiecho:warm:{speaker_id}"


def node_warm_key(node_id: str) -> str:
    return f"scaiecho:node-warm:{node_id}"


@dataclass(frozen=True)
class Heartbeat:
    node_id: str
    engine: str
    model_id: str
    model_version: str
    boot_id: str
    host: str
    pid: int
    gallery_size: int
    sent_at: float
    pool: str = DEFAULT_POOL

    @classmethod
    def from_json(cls, raw: str | bytes) -> Heartbeat:
        """Reads a published heartbeat; keys a newer node adds are ignored, so a rolling
        upgrade may start nodes before the API processes and workers."""
        data = json.loads(raw)
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    @property
    def age_s(self) -> float:
        return max(0.0, time.time() - self.sent_at)

    @property
    def is_candidate(self) -> bool:
        return self.engine == PYANNOTE_ENGINE


def publish_heartbeat(beat: Heartbeat) -> bool:
    """Writes the heartbeat; returns True when the registry had lost this node (new or flushed)."""
    client = redis_client()
    pipe = client.pipeline()
    pipe.set(
        heartbeat_key(beat.node_id),
        json.dumps(beat.__dict__),
        ex=settings.NODE_HEARTBEAT_TTL_S,
        get=True,
    )
    pipe.sadd(NODES_KEY, beat.node_id)
    previous, _ = pipe.execute()
    return previous is None


def live_heartbeats() -> dict[str, Heartbeat]:
    client = redis_client()
    node_ids = sorted(str(n) for n in client.smembers(NODES_KEY))
    if not node_ids:
        return {}
    beats: list[Any] = client.mget([heartbeat_key(n) for n in node_ids])
    return {
        node_id: Heartbeat.from_json(raw)
        for node_id, raw in zip(node_ids, beats, strict=True)
        if raw is not None
    }


def candidate_node_ids(pool: str | None = None) -> list[str]:
    """Nodes whose heartbeat is alive and that run the pyannote engine (of one pool, if given)."""
    return sorted(
        n
        for n, beat in live_heartbeats().items()
        if beat.is_candidate and (pool is None or beat.pool == pool)
    )


def candidates_by_pool() -> dict[str, list[str]]:
    """The candidate nodes of each pool that has one."""
    by_pool: dict[str, list[str]] = {}
    for node_id, beat in sorted(live_heartbeats().items()):
        if beat.is_candidate:
            by_pool.setdefault(beat.pool, []).append(node_id)
    return by_pool


def mark_warm(node_id: str, speaker_id: str) -> None:
    pipe = redis_client().pipeline()
    pipe.sadd(warm_key(speaker_id), node_id)
    pipe.sadd(node_warm_key(node_id), speaker_id)
    pipe.execute()


def mark_cold(node_id: str, speaker_id: str) -> None:
    pipe = redis_client().pipeline()
    pipe.srem(warm_key(speaker_id), node_id)
    pipe.srem(node_warm_key(node_id), speaker_id)
    pipe.execute()


def forget_speaker(speaker_id: str) -> None:
    """Drops every warm entry of an erased speaker."""
    client = redis_client()
    node_ids = [str(n) for n in client.smembers(warm_key(speaker_id))]
    pipe = client.pipeline()
    for node_id in node_ids:
        pipe.srem(node_warm_key(node_id), speaker_id)
    pipe.delete(warm_key(speaker_id))
    pipe.execute()


# One script per batch instead of one SADD per speaker: a starting node republishes its whole
# gallery. KEYS: the node's own set; ARGV: the node id, the warm keys' prefix, the speakers
# (their keys are made in the script, which halves what is sent; one Redis, not a cluster).
_REPUBLISH_WARM = """
for i = 3, #ARGV do redis.call('SADD', ARGV[2] .. ARGV[i], ARGV[1]) end
if #ARGV > 2 then redis.call('SADD', KEYS[1], unpack(ARGV, 3)) end
"""
# Lua's unpack takes about 8,000 values at most.
_REPUBLISH_CHUNK = 4000

# Drops the node from the warm set of every speaker in its own set, then that set, in one
# script (a node may hold 100,000 speakers). ARGV: the node id, the warm keys' prefix.
_FORGET_NODE = """
local speakers = redis.call('SMEMBERS', KEYS[1])
for _, speaker in ipairs(speakers) do redis.call('SREM', ARGV[2] .. speaker, ARGV[1]) end
redis.call('DEL', KEYS[1])
return speakers
"""


def republish_warm(node_id: str, speaker_ids: list[str]) -> None:
    client = redis_client()
    script = client.register_script(_REPUBLISH_WARM)
    for start in range(0, len(speaker_ids), _REPUBLISH_CHUNK):
        chunk = speaker_ids[start : start + _REPUBLISH_CHUNK]
        script(keys=[node_warm_key(node_id)], args=[node_id, warm_key(""), *chunk])


def forget_node_warmth(node_id: str) -> list[str]:
    """Drops every warm entry of a node (it restarted and lost its memory)."""
    client = redis_client()
    forgotten = client.register_script(_FORGET_NODE)(
        keys=[node_warm_key(node_id)], args=[node_id, warm_key("")]
    )
    return [str(s) for s in forgotten]


def warm_node_ids(speaker_id: str) -> list[str]:
    return sorted(str(n) for n in redis_client().smembers(warm_key(speaker_id)))
