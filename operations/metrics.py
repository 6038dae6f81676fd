"""Prometheus metrics of the API process, served at /metrics.

Request latency and preflight outcomes are counted as they happen; queue depth, nodes
alive and speakers per status are read at scrape time from Redis and PostgreSQL, so every
API process reports the same truth for them.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REQUEST_LATENCY = Histogram(
    "scaiecho_http_request_duration_seconds",
    "HTTP request latency by route, method and status.",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PREFLIGHT_OUTCOMES = Counter(
    "scaiecho_preflight_outcomes_total",
    "Enrollment preflights by outcome (passed, rejected) and by finding code.",
    ["outcome", "finding"],
)


def observe_preflight(passed: bool, finding_codes: list[str]) -> None:
    outcome = "passed" if passed else "rejected"
    PREFLIGHT_OUTCOMES.labels(outcome, "").inc()
    for code in finding_codes:
        PREFLIGHT_OUTCOMES.labels(outcome, code).inc()


FANOUT_LATENCY = Histogram(
    "scaiecho_fanout_ready_seconds",
    "From an enrollment's commit to its first warm node, as seen by the 201's wait.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10),
)


class LiveStateCollector(Collector):
    """Queue depth per queue, nodes alive, speakers by status: read when scraped."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from django.db import DatabaseError
        from django.db.models import Count
        from redis.exceptions import RedisError

        from enrollment.models import Speaker
        from nodes import registry

        up = GaugeMetricFamily(
            "scaiecho_live_state_up", "1 when Redis and PostgreSQL answered this scrape."
        )
        try:
            beats = registry.live_heartbeats()
            client = registry.redis_client()
            depths = {
                queue: float(client.llen(queue))
                for queue in ["orchestrator", *(f"node.{n}" for n in beats)]
            }
            statuses = list(
                Speaker.objects.values_list("enrollment_status").order_by().annotate(n=Count("id"))
            )
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
