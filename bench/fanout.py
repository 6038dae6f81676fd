"""Fan-out benchmark with real node processes.

1. With 1, 2 and 4 nodes: time from the enrollment's commit to `ready` and to
   warm-on-all, from the service's own timestamps, and the overhead of `ready`
   over the first node's embedding time.
2. Re-warm of a restarted node holding 1,000 speakers.
3. Latency of GET .../warm over HTTP with 10,000 enrolled speakers.
4. Peak RSS of one node.

    .venv/bin/python bench/fanout.py
    .venv/bin/python bench/fanout.py --enrollments 5 --rewarm-speakers 200

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
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    ROOT,
    free_port,
    isolate_environment,
    peak_rss_mb,
    percentile,
    summary,
    wait_for_http,
)


def start_node(node_id: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_node", node_id, "--loglevel", "WARNING"],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_until(predicate, timeout_s: float = 600.0, interval_s: float = 0.005):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval_s)
    raise TimeoutError("benchmark condition not reached")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--enrollments", type=int, default=10, help="per node count")
    parser.add_argument("--node-counts", default="1,2,4")
    parser.add_argument("--rewarm-speakers", type=int, default=1000)
    parser.add_argument("--warm-speakers", type=int, default=10_000)
    args = parser.parse_args()

    os.environ["ENROLLMENT_ACK_WAIT_S"] = "0"  # answer at once; the nodes are timed below
    isolate_environment("fanout")
    from bench.enroll import recordings
    from enrollment.models import Speaker
    from enrollment.services import create_api_key, create_tenant
    from nodes import registry
    from nodes.models import AssignmentState, NodeAssignment

    tenant = create_tenant("bench")
    _, key = create_api_key(tenant, ["scaiecho:enroll"])
    reference, consent = recordings()[0]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=os.environ.copy(),
    )
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    try:
        wait_for_http(f"{base}/v1/openapi.json")

        def enroll() -> str:
            response = client.post(
                "/v1/modules/scaiecho/speakers",
                data={
                    "display_name": "Bench",
                    "language_primary": "en",
                    "consent_user_full_name": "Bench Speaker",
                    "consent_stated_purpose": "benchmark",
                    "consent_text": "I consent.",
                },
                files={"reference": ("r.wav", reference), "consent": ("c.wav", consent)},
            )
            response.raise_for_status()
            return str(response.json()["data"]["id"])

        enroll()  # loads the API's models
        print("1. enrollment commit -> ready / warm on all nodes (service timestamps)")
        for count in [int(n) for n in args.node_counts.split(",")]:
            node_ids = [f"n{count}-{i}" for i in range(count)]
            nodes = [start_node(n) for n in node_ids]
            wait_until(
                lambda ids=node_ids: set(ids) <= set(registry.candidate_node_ids()),
                timeout_s=180,
                interval_s=0.2,
            )
            ready, all_warm, overhead, work = [], [], [], []
            for _ in range(args.enrollments):
                speaker_id = enroll()
                rows = wait_until(
                    lambda s=speaker_id, c=count: (
                        lambda r: (
                            r
                            if len(r) == c and all(a.state == AssignmentState.WARM for a in r)
                            else None
                        )
                    )(list(NodeAssignment.objects.filter(speaker_id=s))),
                    timeout_s=120,
                )
                speaker = Speaker.objects.get(id=speaker_id)
                first = min(rows, key=lambda a: a.updated_at)
                to_ready = (speaker.status_changed_at - speaker.created_at).total_seconds()
                ready.append(to_ready)
                all_warm.append(
                    (max(a.updated_at for a in rows) - speaker.created_at).total_seconds()
                )
                work.append(first.last_work_s or 0.0)
                overhead.append(to_ready - (first.last_work_s or 0.0))
            print(
                f"  {count} node(s): ready {summary(ready)} | all warm {summary(all_warm)} | "
                f"embedding {statistics.median(work) * 1000:.0f} ms | overhead "
                f"{summary(overhead)}"
            )
            for node in nodes:
                stop(node)

        print(f"2. re-warm of a restarted node holding {args.rewarm_speakers} speakers")
        template = Speaker.objects.filter(tenant=tenant).first()
        assert template is not None
        copies = args.rewarm_speakers - Speaker.objects.filter(tenant=tenant).count()
        Speaker.objects.bulk_create(
            [
                Speaker(
                    **{
                        f.attname: getattr(template, f.attname)
                        for f in Speaker._meta.concrete_fields
                        if f.attname != "id"
                    },
                    id=uuid.uuid4(),
                )
                for _ in range(max(0, copies))
            ]
        )
        total = Speaker.objects.count()
        node = start_node("rewarm")
        wait_until(
            lambda: (
                NodeAssignment.objects.filter(node_id="rewarm", state=AssignmentState.WARM).count()
                == total
            ),
            interval_s=0.5,
        )
        stop(node)
        restarted = time.monotonic()
        node = start_node("rewarm")
        boot = wait_until(lambda: registry.live_heartbeats().get("rewarm"), interval_s=0.05).boot_id
        online = time.monotonic() - restarted
        wait_until(
            lambda: (
                NodeAssignment.objects.filter(
                    node_id="rewarm", state=AssignmentState.WARM, boot_id=boot
                ).count()
                == total
            ),
            interval_s=0.2,
        )
        elapsed = time.monotonic() - restarted
        print(
            f"  {total} speakers re-warmed {elapsed:.1f} s after the restart "
            f"(process online after {online:.1f} s; {(elapsed - online) / total * 1000:.0f} ms "
            f"per speaker); node peak RSS {peak_rss_mb(node.pid):.0f} MB"
        )
        stop(node)

        print(f"3. GET .../warm with {args.warm_speakers} enrolled speakers")
        copies = args.warm_speakers - Speaker.objects.count()
        new = [
            Speaker(
                **{
                    f.attname: getattr(template, f.attname)
                    for f in Speaker._meta.concrete_fields
                    if f.attname != "id"
                },
                id=uuid.uuid4(),
            )
            for _ in range(max(0, copies))
        ]
        Speaker.objects.bulk_create(new, batch_size=2000)
        live = [start_node(f"warm-{i}") for i in range(2)]
        wait_until(lambda: len(registry.candidate_node_ids()) == 2, timeout_s=180, interval_s=0.2)
        ids = [str(s) for s in Speaker.objects.values_list("id", flat=True)]
        pipe = registry.redis_client().pipeline()
        for speaker_id in ids:
            for node_id in ("warm-0", "warm-1", "gone-node"):
                pipe.sadd(registry.warm_key(speaker_id), node_id)
        pipe.execute()
        latencies = []
        for speaker_id in random.sample(ids, 300):
            started = time.perf_counter()
            response = client.get(f"/v1/modules/scaiecho/speakers/{speaker_id}/warm")
            latencies.append(time.perf_counter() - started)
            response.raise_for_status()
        print(
            f"  {len(ids)} speakers: {summary(latencies)}  p99 "
            f"{percentile(latencies, 99) * 1000:.1f} ms"
        )
        for node in live:
            stop(node)
    finally:
        client.close()
        stop(api)


if __name__ == "__main__":
    main()
