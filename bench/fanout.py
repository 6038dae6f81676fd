"""Fan-out benchmark with real node processes.

1. With 1, 2 and 4 nodes: time from the enrollment's commit to `ready` and to
   warm-on-all, from the service's own timestamps, warm-on-all after ready, and the
   overhead of `ready` over the first node's embedding time.
2. Re-warm of a restarted node holding 1,000 speakers, and that node's peak RSS.
3. Latency of GET .../warm over HTTP with 10,000 enrolled speakers.
4. Restart-to-warm of one node with 100,000 speakers whose voiceprints are in the voiceprint
   store (inserted directly: data keys and synthetic vectors, no audio), and its peak RSS,
   restarted --restarts times.
5. Enrollment latency over HTTP at concurrency 1 in an empty tenant and in the tenant of
   those 100,000 speakers (the duplicate check's gallery).

    .venv/bin/python bench/fanout.py
    .venv/bin/python bench/fanout.py --parts 1 --enrollments 5
    .venv/bin/python bench/fanout.py --parts 4,5 --stored-speakers 100000 --restarts 3

Runs in a database and Redis of its own (see bench/common.py). The 1,000 and
10,000 speakers beyond the HTTP enrollments are database copies of an enrolled
speaker (same reference blob): they measure the nodes and the warm registry,
not the intake.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    ROOT,
    enroll_over_http,
    isolate_environment,
    peak_rss_mb,
    percentile,
    running_api,
    summary,
)


def start_node(node_id: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_node", node_id, "--loglevel", "WARNING"],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_until(
    predicate: Callable[[], Any], timeout_s: float = 600.0, interval_s: float = 0.005
) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval_s)
    raise TimeoutError("benchmark condition not reached")


def online_boot(node_id: str, process: subprocess.Popen[bytes]) -> str:
    """The boot id of that process once it heartbeats: never the heartbeat of an earlier
    process of the same node id, which outlives it for up to its TTL."""
    from nodes import registry

    def beat() -> Any:
        beat = registry.live_heartbeats().get(node_id)
        return beat if beat is not None and beat.pid == process.pid else None

    return str(wait_until(beat, interval_s=0.05).boot_id)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=60)


def warm_count(node_ids: list[str], boot_id: str | None = None) -> int:
    from nodes.models import AssignmentState, NodeAssignment

    rows = NodeAssignment.objects.filter(node_id__in=node_ids, state=AssignmentState.WARM)
    return rows.filter(boot_id=boot_id).count() if boot_id else rows.count()


def fan_out(enroll: Callable[[], str], node_counts: list[int], enrollments: int) -> None:
    from enrollment.models import WARMABLE_STATUSES, Speaker
    from nodes import registry
    from nodes.models import AssignmentState, NodeAssignment

    print("1. enrollment commit -> ready / warm on all nodes (service timestamps)")
    for count in node_counts:
        node_ids = [f"n{count}-{i}" for i in range(count)]
        nodes = [start_node(n) for n in node_ids]
        wait_until(
            lambda ids=node_ids: set(ids) <= set(registry.candidate_node_ids()),
            timeout_s=180,
            interval_s=0.2,
        )
        # New nodes first warm every speaker enrolled so far; time only fresh enrollments.
        backlog = Speaker.objects.filter(enrollment_status__in=WARMABLE_STATUSES).count() * count
        wait_until(lambda ids=node_ids, n=backlog: warm_count(ids) == n, interval_s=0.2)
        ready, all_warm, after_ready, overhead, work = [], [], [], [], []
        for _ in range(enrollments):
            speaker_id = enroll()
            speaker = wait_until(
                lambda s=speaker_id: Speaker.objects.filter(
                    id=s, enrollment_status="ready"
                ).first(),
                timeout_s=120,
            )
            rows = wait_until(
                lambda s=speaker_id, c=count: (lambda r: r if len(r) == c else None)(
                    list(NodeAssignment.objects.filter(speaker_id=s, state=AssignmentState.WARM))
                ),
                timeout_s=120,
            )
            first = min(rows, key=lambda a: a.updated_at)
            to_ready = (speaker.status_changed_at - speaker.created_at).total_seconds()
            to_all = (max(a.updated_at for a in rows) - speaker.created_at).total_seconds()
            ready.append(to_ready)
            all_warm.append(to_all)
            after_ready.append(to_all - to_ready)
            work.append(first.last_work_s or 0.0)
            overhead.append(to_ready - (first.last_work_s or 0.0))
        print(
            f"  {count} node(s): ready {summary(ready)} | all warm {summary(all_warm)} | "
            f"all warm after ready {summary(after_ready)} | "
            f"first node's work p50 {statistics.median(work) * 1000:.0f} ms | "
            f"ready minus work {summary(overhead)}"
        )
        for node in nodes:
            stop(node)


def copy_speakers(template: Any, count: int) -> None:
    from enrollment.models import Speaker

    fields = [f.attname for f in Speaker._meta.concrete_fields if f.attname != "id"]
    Speaker.objects.bulk_create(
        [
            Speaker(**{f: getattr(template, f) for f in fields}, id=uuid.uuid4())
            for _ in range(max(0, count))
        ],
        batch_size=2000,
    )


def rewarm(template: Any, speakers: int) -> None:
    from enrollment.models import Speaker

    print(f"2. re-warm of a restarted node holding {speakers} speakers")
    copy_speakers(template, speakers - Speaker.objects.count())
    total = Speaker.objects.count()
    node = start_node("rewarm")
    wait_until(lambda: warm_count(["rewarm"]) == total, interval_s=0.5)
    stop(node)
    restarted = time.monotonic()
    node = start_node("rewarm")
    boot = online_boot("rewarm", node)
    online = time.monotonic() - restarted
    wait_until(lambda: warm_count(["rewarm"], boot) == total, interval_s=0.2)
    elapsed = time.monotonic() - restarted
    print(
        f"  {total} speakers re-warmed {elapsed:.1f} s after the restart (process online "
        f"after {online:.1f} s, then {(elapsed - online) / total * 1000:.0f} ms per speaker); "
        f"node peak RSS {peak_rss_mb(node.pid):.0f} MB"
    )
    stop(node)


def stored_speakers(template: Any, count: int, batch: int = 2000) -> None:
    """Speakers inserted directly, each with its data key and a synthetic unit vector in the
    voiceprint store under the template's model."""
    from django.db import transaction

    from data_keys.models import DataKey
    from data_keys.wrapping import new_wrapped_data_key
    from enrollment.models import EnrollmentStatus, Speaker, Voiceprint
    from enrollment.voiceprints import PREFLIGHT, seal_voiceprint

    model = (template.embedding_model_id, template.embedding_model_version)
    fields = [
        f.attname
        for f in Speaker._meta.concrete_fields
        if f.attname not in ("id", "enrollment_status")
    ]
    rng = np.random.default_rng(0)
    for start in range(0, max(0, count), batch):
        speakers = [
            Speaker(
                **{f: getattr(template, f) for f in fields},
                id=uuid.uuid4(),
                enrollment_status=EnrollmentStatus.READY,
            )
            for _ in range(min(batch, count - start))
        ]
        vectors = rng.normal(size=(len(speakers), 256)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        keys, rows = [], []
        for speaker, vector in zip(speakers, vectors, strict=True):
            key, wrapped, key_id = new_wrapped_data_key(speaker.id)
            keys.append(
                DataKey(
                    speaker_id=speaker.id,
                    tenant_id=speaker.tenant_id,
                    wrapped_key=wrapped,
                    wrapping_key_id=key_id,
                )
            )
            sealed = seal_voiceprint(key, *model, vector)
            rows.append(
                Voiceprint(
                    speaker_id=speaker.id,
                    tenant_id=speaker.tenant_id,
                    model_id=model[0],
                    model_version=model[1],
                    ciphertext=sealed.ciphertext,
                    vector_sha256=sealed.vector_sha256,
                    computed_by=PREFLIGHT,
                )
            )
        with transaction.atomic():
            Speaker.objects.bulk_create(speakers)
            DataKey.objects.bulk_create(keys)
            Voiceprint.objects.bulk_create(rows)
    settle()


def settle() -> None:
    """VACUUM ANALYZE after a bulk insert, as autovacuum would do on a production server: the
    test servers here run with it off, and without it every index-only scan (the duplicate
    check's fingerprint) reads the heap too and the planner knows nothing of the new rows."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


def restart_to_warm(template: Any, speakers: int, restarts: int) -> None:
    from enrollment.models import Voiceprint

    print(f"4. restart-to-warm of one node with {speakers} stored voiceprints")
    inserted = time.monotonic()
    stored_speakers(template, speakers - Voiceprint.objects.count())
    # The HTTP-enrolled template may be held for review: only what a node takes is counted.
    total = Voiceprint.objects.filter(speaker__enrollment_status__in=["pending", "ready"]).count()
    took = time.monotonic() - inserted
    print(f"  {total} warmable speakers in the store (inserted in {took:.0f} s)")
    node = start_node("bulk")
    wait_until(lambda: warm_count(["bulk"]) >= total, interval_s=0.5)
    stop(node)
    settle()  # the node's 100,000 new assignment rows
    warm_s, online_s, rss = [], [], []
    for _ in range(restarts):
        restarted = time.monotonic()
        node = start_node("bulk")
        boot = online_boot("bulk", node)
        online_s.append(time.monotonic() - restarted)
        wait_until(lambda b=boot: warm_count(["bulk"], b) >= total, interval_s=0.2)
        warm_s.append(time.monotonic() - restarted)
        rss.append(peak_rss_mb(node.pid))
        stop(node)
    print(
        f"  warm with {total} speakers after the restart (process start and model load "
        f"included): median {statistics.median(warm_s):.1f} s of "
        f"{', '.join(f'{s:.1f}' for s in warm_s)} (online, its gallery loaded, after "
        f"{', '.join(f'{s:.1f}' for s in online_s)} s); node peak RSS median "
        f"{statistics.median(rss):.0f} MB"
    )


def enrollment_with_gallery(
    client: httpx.Client,
    enroll: Callable[[httpx.Client], str],
    template: Any,
    speakers: int,
    n: int,
) -> None:
    from enrollment.models import Speaker, Voiceprint
    from operations.services import create_api_key
    from tenancy.services import create_tenant

    print(f"5. enrollment at concurrency 1: empty tenant vs {speakers} speakers in the tenant")
    stored_speakers(template, speakers - Voiceprint.objects.filter(tenant=template.tenant).count())
    held = Speaker.objects.filter(tenant=template.tenant).count()
    _, key = create_api_key(create_tenant(f"empty-{uuid.uuid4().hex[:8]}"), ["scaiecho:enroll"])
    empty = httpx.Client(
        base_url=client.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    )

    def timed(on: httpx.Client) -> float:
        started = time.perf_counter()
        enroll(on)
        return time.perf_counter() - started

    # The first enrollment in a tenant fills that API process's duplicate-check gallery.
    first_full = timed(client)
    timed(empty)
    # Interleaved, so that the load of a shared machine falls on both alike.
    full_s, empty_s = [], []
    for _ in range(n):
        full_s.append(timed(client))
        empty_s.append(timed(empty))
    empty.close()
    ratio = statistics.median(full_s) / statistics.median(empty_s)
    print(
        f"  empty tenant: {summary(empty_s)} | {held} speakers: {summary(full_s)} "
        f"(p50 ratio {ratio:.2f}; the first enrollment there, which opens the tenant's "
        f"voiceprints into the API process's gallery, took {first_full:.1f} s)"
    )


def warm_view_latency(client: httpx.Client, template: Any, speakers: int) -> None:
    from enrollment.models import Speaker
    from nodes import registry

    print(f"3. GET .../warm with {speakers} enrolled speakers")
    copy_speakers(template, speakers - Speaker.objects.count())
    # Two live nodes and one gone: every answer has warm, candidate and stale ids to compute.
    live = [start_node(f"warm-{i}") for i in range(2)]
    try:
        wait_until(
            lambda: {"warm-0", "warm-1"} <= set(registry.candidate_node_ids()),
            timeout_s=180,
            interval_s=0.2,
        )
        ids = [str(s) for s in Speaker.objects.values_list("id", flat=True)]
        pipe = registry.redis_client().pipeline()
        for speaker_id in ids:
            for node_id in ("warm-0", "warm-1", "gone-node"):
                pipe.sadd(registry.warm_key(speaker_id), node_id)
        pipe.execute()
        latencies = []
        for speaker_id in random.sample(ids, min(300, len(ids))):
            started = time.perf_counter()
            response = client.get(f"/v1/modules/scaiecho/speakers/{speaker_id}/warm")
            latencies.append(time.perf_counter() - started)
            response.raise_for_status()
        print(
            f"  {len(ids)} speakers: {summary(latencies)}  p99 "
            f"{percentile(latencies, 99) * 1000:.1f} ms"
        )
    finally:
        for node in live:
            stop(node)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--enrollments", type=int, default=10, help="per node count")
    parser.add_argument("--node-counts", default="1,2,4")
    parser.add_argument("--rewarm-speakers", type=int, default=1000)
    parser.add_argument("--warm-speakers", type=int, default=10_000)
    parser.add_argument("--stored-speakers", type=int, default=100_000)
    parser.add_argument("--restarts", type=int, default=3, help="restarts timed in part 4")
    parser.add_argument("--gallery-enrollments", type=int, default=20, help="per tenant, part 5")
    parser.add_argument("--parts", default="1,2,3,4,5", help="which measurements to run")
    args = parser.parse_args()
    parts = set(args.parts.split(","))

    os.environ["ENROLLMENT_ACK_WAIT_S"] = "0"  # answer at once; the nodes are timed here
    # An enrollment held for review never fans out: the nodes are measured here, not the hold.
    os.environ["PREFLIGHT_CONSENT_POLICY"] = "warn"
    os.environ["PREFLIGHT_SECOND_VOICE_POLICY"] = "warn"
    isolate_environment("fanout")
    from bench.enroll import recordings
    from enrollment.models import Speaker
    from operations.services import create_api_key
    from tenancy.services import create_tenant

    tenant = create_tenant("bench")
    _, key = create_api_key(tenant, ["scaiecho:enroll"])
    reference, consent = recordings()[0]
    with running_api(key) as client:

        def enroll(on: httpx.Client = client) -> str:
            return str(enroll_over_http(on, reference, consent)["id"])

        enroll()  # loads the API's models
        if "1" in parts:
            fan_out(enroll, [int(n) for n in args.node_counts.split(",")], args.enrollments)
        template = Speaker.objects.filter(tenant=tenant).first()
        if "2" in parts:
            rewarm(template, args.rewarm_speakers)
        if "3" in parts:
            warm_view_latency(client, template, args.warm_speakers)
        if "4" in parts:
            restart_to_warm(template, args.stored_speakers, args.restarts)
        if "5" in parts:
            enrollment_with_gallery(
                client, enroll, template, args.stored_speakers, args.gallery_enrollments
            )


if __name__ == "__main__":
    main()
