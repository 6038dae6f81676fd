"""Prometheus metrics counted where things happen; served at /metrics by operations."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
