"""The live state behind /metrics.

Request latency and preflight outcomes are counted as they happen (``common.metrics``); queue
depth, nodes alive and speakers per status are read at scrape time from Redis and
PostgreSQL, so every API process reports the same truth for them.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.db import DatabaseError
from django.db.models import Count
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from common.redis_client import redis_client
from enrollment.models import Speaker
from nodes import registry
from nodes.selectors import voiceprints_missing


class LiveStateCollector(Collector):
    """Queue depth per queue, nodes alive, gallery and missing voiceprints per node, speakers
    by status: read when scraped."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "scaiecho_live_state_up", "1 when Redis and PostgreSQL answered this scrape."
        )
        try:
            beats = registry.live_heartbeats()
            client = redis_client()
            depths = {
                queue: float(client.llen(queue))
                for queue in ["orchestrator", *(f"node.{n}" for n in beats)]
            }
            statuses = list(
                Speaker.objects.values_list("enrollment_status").order_by().annotate(n=Count("id"))
            )
            missing = voiceprints_missing((b.model_id, b.model_version) for b in beats.values())
        except (RedisError, DatabaseError):
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        depth = GaugeMetricFamily(
            "scaiecho_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"]
        )
        for queue, value in depths.items():
            depth.add_metric([queue], value)
        yield depth
        yield GaugeMetricFamily(
            "scaiecho_nodes_alive",
            "Pyannote nodes with a live heartbeat.",
            value=float(sum(1 for b in beats.values() if b.is_candidate)),
        )
        galleries = GaugeMetricFamily(
            "scaiecho_node_gallery_size",
            "Speakers of every tenant each live node holds.",
            labels=["node"],
        )
        for node_id, beat in beats.items():
            galleries.add_metric([node_id], float(beat.gallery_size))
        yield galleries
        to_compute = GaugeMetricFamily(
            "scaiecho_node_voiceprints_missing",
            "Speakers of every tenant with no stored voiceprint of each live node's model.",
            labels=["node"],
        )
        for node_id, beat in beats.items():
            to_compute.add_metric([node_id], float(missing[(beat.model_id, beat.model_version)]))
        yield to_compute
        speakers = GaugeMetricFamily(
            "scaiecho_speakers", "Speakers by enrollment status.", labels=["status"]
        )
        for status, count in statuses:
            speakers.add_metric([status], float(count))
        yield speakers


_registered = False


def register_live_state() -> None:
    global _registered
    if not _registered:
        REGISTRY.register(LiveStateCollector())
        _registered = True
