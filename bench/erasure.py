"""Erasure benchmark with real node processes.

1. With 1, 2 and 4 nodes holding the speaker: time from DELETE to every node's
   eviction confirmed (client wall clock, and the service's own timestamps).
2. Verification time of an audit trail of 100,000 events.

    .venv/bin/python bench/erasure.py
    .venv/bin/python bench/erasure.py --erasures 5 --events 20000

Runs in a database and Redis of its own (see bench/common.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    enroll_over_http,
    isolate_environment,
    running_api,
    summary,
)
from bench.fanout import start_node, stop, wait_until  # noqa: E402


def build_trail(count: int) -> None:
    """Appends ``count`` valid, chained events in bulk (INSERT is all the table allows)."""
    from django.utils import timezone

    from audit.models import AuditEvent
    from audit.services import GENESIS_HASH, event_hash

    prev = AuditEvent.objects.order_by("-seq").values_list("hash", flat=True).first()
    prev = prev or GENESIS_HASH
    batch = []
    for n in range(count):
        occurred_at = timezone.now()
        details = {"n": n, "note": "benchmark event"}
        digest = event_hash(
            prev_hash=prev,
            occurred_at=occurred_at,
            tenant_id=None,
            action="bench.event",
            actor="system",
            speaker_id=None,
            details=details,
        )
        batch.append(
            AuditEvent(
                occurred_at=occurred_at,
                action="bench.event",
                actor="system",
                details=details,
                prev_hash=prev,
                hash=digest,
            )
        )
        prev = digest
        if len(batch) == 5000:
            AuditEvent.objects.bulk_create(batch)
            batch = []
    AuditEvent.objects.bulk_create(batch)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--erasures", type=int, default=8, help="per node count")
    parser.add_argument("--node-counts", default="1,2,4")
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()

    isolate_environment("erasure")
    from audit.models import AuditEvent, ErasureAudit, ErasureConfirmation
    from audit.services import verify_chain
    from bench.enroll import recordings
    from nodes import registry
    from operations.services import create_api_key
    from tenancy.services import create_tenant

    tenant = create_tenant("bench")
    _, key = create_api_key(tenant, ["scaiecho:enroll"])
    reference, consent = recordings()[0]
    with running_api(key) as client:
        print("1. DELETE -> eviction confirmed by every node holding the speaker")
        for count in [int(n) for n in args.node_counts.split(",")]:
            node_ids = [f"e{count}-{i}" for i in range(count)]
            nodes = [start_node(n) for n in node_ids]
            wait_until(
                lambda ids=node_ids: set(ids) <= set(registry.candidate_node_ids()),
                timeout_s=180,
                interval_s=0.2,
            )
            wall, server = [], []
            for _ in range(args.erasures):
                data = enroll_over_http(client, reference, consent)
                assert sorted(data["enrolled_on"]) == node_ids, data
                started = time.perf_counter()
                erased = client.delete(f"/v1/modules/scaiecho/speakers/{data['id']}").json()
                audit_id = erased["data"]["audit_id"]
                wait_until(
                    lambda a=audit_id, c=count: (
                        ErasureConfirmation.objects.filter(erasure_id=a, outcome="evicted").count()
                        == c
                    ),
                    timeout_s=60,
                )
                wall.append(time.perf_counter() - started)
                erasure = ErasureAudit.objects.get(id=audit_id)
                last = max(c.confirmed_at for c in erasure.confirmations.all())
                server.append((last - erasure.erased_at).total_seconds())
            print(
                f"  {count} node(s): client DELETE -> all evicted {summary(wall)} | "
                f"receipt -> last confirmation {summary(server)}"
            )
            for node in nodes:
                stop(node)

        print(f"2. verify an audit trail of {args.events} events")
        build_trail(args.events - AuditEvent.objects.count())
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            verdict = verify_chain()
            runs.append(time.perf_counter() - started)
            assert verdict.intact, verdict
        print(
            f"  {verdict.events_checked} events: median {statistics.median(runs):.2f} s "
            f"(runs: {', '.join(f'{r:.2f}' for r in runs)})"
        )


if __name__ == "__main__":
    main()
