"""Reading published heartbeats across versions of the node."""

from __future__ import annotations

import json

from nodes.registry import DEFAULT_POOL, Heartbeat

BEAT = {
    "node_id": "node-a",
    "engine": "pyannote",
    "model_id": "resemblyzer",
    "model_version": "1",
    "boot_id": "b1",
    "host": "h",
    "pid": 1,
    "gallery_size": 3,
    "sent_at": 100.0,
}


def test_a_newer_nodes_heartbeat_with_unknown_keys_is_read():
    beat = Heartbeat.from_json(json.dumps({**BEAT, "pool": "eu", "added_later": [1, 2]}))

    assert beat.node_id == "node-a" and beat.pool == "eu" and beat.gallery_size == 3


def test_an_older_nodes_heartbeat_without_a_pool_is_in_the_default_pool():
    assert Heartbeat.from_json(json.dumps(BEAT)).pool == DEFAULT_POOL


def test_a_heartbeat_round_trips_as_published():
    beat = Heartbeat(**BEAT, pool="eu")

    assert Heartbeat.from_json(json.dumps(beat.__dict__)) == beat
