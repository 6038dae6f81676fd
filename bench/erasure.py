"""Erasure benchmark with real node processes.

1. With 1, 2 and 4 nodes holding the speaker: time from DELETE to every node's
   eviction confirmed (client wall clock, and the service's own timestamps).
2. Verification time of an audit trail of 100,000 events.
3. Erasure time (DELETE answered) with no stored diarization result and with 1,000 results
   labelling the speaker: names are not stored in results, so it should not grow with them.
4. Encryption overhead per enrollment: making and wrapping the speaker's data key, encrypting
   the consent record's three personal fields and the voiceprint (target: under 1 ms), and
   the same with the data key's row written.

    .venv/bin/python bench/erasure.py
    .venv/bin/python bench/erasure.py --erasures 5 --events 20000 --results 1000
    .venv/bin/python bench/erasure.py --sections 3,4

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
    percentile,
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


def store_results(tenant_id: object, speaker_id: str, count: int) -> None:
    """``count`` finished jobs whose results label the speaker, written in bulk."""
    import uuid

    from django.utils import timezone

    from diarization.models import DiarizationJob, JobStatus

    segments = [
        {"start": float(n), "end": n + 0.9, "speaker_label": speaker_id, "confidence": 0.9}
        for n in range(20)
    ]
    result = {
        "segments": segments,
        "speakers": [{"speaker_label": speaker_id, "enrolled": True, "score": 0.9}],
    }
    now = timezone.now()
    DiarizationJob.objects.bulk_create(
        [
            DiarizationJob(
                id=uuid.uuid4(),
                tenant_id=tenant_id,
                status=JobStatus.SUCCEEDED,
                audio_blob_key=f"diarize/bench/{n}",
                audio_sha256="0" * 64,
                audio_size_bytes=1,
                audio_duration_s=20.0,
                estimated_time_s=1,
                options={},
                result=result,
                completed_at=now,
            )
            for n in range(count)
        ],
        batch_size=500,
    )


def micros(values: list[float]) -> str:
    p50, p95 = statistics.median(values) * 1e6, percentile(values, 95) * 1e6
    return f"p50 {p50:7.1f} us  p95 {p95:7.1f} us"


def encryption_overhead(iterations: int) -> tuple[list[float], list[float]]:
    """Seconds per enrollment for the crypto alone, and with the data key's row written."""
    import uuid

    import numpy as np
    from django.db import transaction

    from consent.models import CLIENT_IP, CONSENT_TEXT, FULL_NAME, consent_field_context
    from data_keys.services import create_data_key
    from data_keys.wrapping import new_wrapped_data_key
    from enrollment.voiceprints import seal_voiceprint
    from tenancy.services import create_tenant

    tenant = create_tenant("bench-crypto")
    vector = np.random.default_rng(0).normal(size=256).astype(np.float32)
    fields = {
        FULL_NAME: "Alice Example",
        CONSENT_TEXT: "I, Alice Example, consent to enrolling my voice for diarization. " * 4,
        CLIENT_IP: "203.0.113.7",
    }

    def encrypt(key) -> None:  # type: ignore[no-untyped-def]
        record_id = uuid.uuid4()
        for column, value in fields.items():
            key.encrypt_text(consent_field_context(record_id, column), value)
        seal_voiceprint(key, "model", "1", vector)

    crypto, with_row = [], []
    for _ in range(iterations):
        started = time.perf_counter()
        key, _, _ = new_wrapped_data_key(uuid.uuid4())
        encrypt(key)
        crypto.append(time.perf_counter() - started)
    for _ in range(iterations // 4):
        speaker_id = uuid.uuid4()
        with transaction.atomic():
            started = time.perf_counter()
            encrypt(create_data_key(speaker_id=speaker_id, tenant_id=tenant.id))
            with_row.append(time.perf_counter() - started)
            transaction.set_rollback(True)
    return crypto, with_row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--erasures", type=int, default=8, help="per node count")
    parser.add_argument("--node-counts", default="1,2,4")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--results", type=int, default=1000, help="stored results (section 3)")
    parser.add_argument("--iterations", type=int, default=2000, help="section 4")
    parser.add_argument("--sections", default="1,2,3,4", help="which sections to run")
    args = parser.parse_args()
    sections = {int(n) for n in args.sections.split(",")}

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
        if 1 in sections:
            print("1. DELETE -> eviction confirmed by every node holding the speaker")
        for count in [int(n) for n in args.node_counts.split(",")] if 1 in sections else []:
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

        if 2 in sections:
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

        if 3 in sections:
            print(f"3. DELETE with 0 and with {args.results} stored results naming the speaker")
            node = start_node("e-results")
            wait_until(lambda: "e-results" in registry.candidate_node_ids(), timeout_s=180)
            for stored in (0, args.results):
                times = []
                for _ in range(args.erasures):
                    data = enroll_over_http(client, reference, consent)
                    store_results(tenant.id, data["id"], stored)
                    started = time.perf_counter()
                    response = client.delete(f"/v1/modules/scaiecho/speakers/{data['id']}")
                    times.append(time.perf_counter() - started)
                    assert response.status_code == 200, response.text
                print(f"  {stored:>5} results: DELETE answered {summary(times)}")
            stop(node)

    if 4 in sections:
        print(f"4. encryption per enrollment ({args.iterations} runs)")
        crypto, with_row = encryption_overhead(args.iterations)
        print(
            f"  key made and wrapped, 3 consent fields and the voiceprint sealed: {micros(crypto)}"
        )
        print(f"  the same with the data key's row inserted: {micros(with_row)}")


if __name__ == "__main__":
    main()
