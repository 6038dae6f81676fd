"""Mixed-workload load test against `manage.py run_service` (API, orchestrator, one node).

Operations, chosen at random with weights: list speakers, read a speaker's warm state,
enroll (10 s reference + 4 s consent), submit a 30 s diarization job, erase a speaker. The
requests arrive open-loop at a fixed rate (a request is sent on schedule whether or not
earlier ones finished). First a short ramp finds the highest rate whose p95 stays under
1 s with no errors; then that rate runs for the full duration. Afterwards every invariant
is checked: each live speaker has its consent record and both recordings, each erased one
has a complete receipt and no recordings, every diarization job finished and its upload is
gone, no stored file is an orphan, and the audit trail verifies.

    .venv/bin/python bench/load.py                     # ramp, then 5 minutes
    .venv/bin/python bench/load.py --duration 60 --rate 3

Runs in a database and Redis of its own (see bench/common.py); blobs go to a local directory.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    free_port,
    isolate_environment,
    manage,
    percentile,
    running_service,
)
from bench.enroll import recordings  # noqa: E402
from tests import audio  # noqa: E402
from tests.audio import encode  # noqa: E402

BASE = "/v1/modules/scaiecho"
WEIGHTS = {"list": 30, "warm": 30, "enroll": 15, "diarize": 15, "erase": 10}


class Workload:
    def __init__(self, client: httpx.Client, pairs: list[tuple[bytes, bytes]]):
        self.client = client
        self.pairs = pairs
        self.meeting = encode(audio.sample(), "flac")
        self.speakers: list[str] = []
        self.jobs: list[str] = []
        self.lock = threading.Lock()
        self.counter = 0

    def pick(self) -> str:
        names = list(WEIGHTS)
        return random.choices(names, weights=[WEIGHTS[n] for n in names])[0]

    def run(self, op: str) -> tuple[str, float, int]:
        with self.lock:
            speaker = random.choice(self.speakers) if self.speakers else None
            self.counter += 1
            n = self.counter
        if op in ("warm", "erase") and speaker is None:
            op = "list"
        started = time.perf_counter()
        if op == "list":
            response = self.client.get(f"{BASE}/speakers", params={"page_size": 50})
        elif op == "warm":
            response = self.client.get(f"{BASE}/speakers/{speaker}/warm")
        elif op == "enroll":
            reference, consent = self.pairs[n % len(self.pairs)]
            response = self.client.post(
                f"{BASE}/speakers",
                data={
                    "display_name": f"Load speaker {n}",
                    "language_primary": "en",
                    "consent_user_full_name": f"Load Speaker {n}",
                    "consent_stated_purpose": "load test",
                    "consent_text": "I consent to enrollment for diarization.",
                },
                files={"reference": ("r.wav", reference), "consent": ("c.wav", consent)},
            )
            if response.status_code == 201:
                with self.lock:
                    self.speakers.append(response.json()["data"]["id"])
        elif op == "diarize":
            response = self.client.post(
                f"{BASE}/diarize", files={"audio": ("meeting.flac", self.meeting)}
            )
            if response.status_code == 202:
                with self.lock:
                    self.jobs.append(response.json()["data"]["id"])
        else:
            with self.lock:
                if speaker in self.speakers:
                    self.speakers.remove(speaker)
            response = self.client.delete(f"{BASE}/speakers/{speaker}")
        return op, time.perf_counter() - started, response.status_code


def drive(workload: Workload, rate: float, seconds: float) -> list[tuple[str, float, int]]:
    """Open loop: one request every 1/rate seconds, each on its own worker."""
    results: list[tuple[str, float, int]] = []
    futures = []
    with ThreadPoolExecutor(max_workers=64) as pool:
        origin = time.perf_counter()
        n = 0
        while (due := origin + n / rate) < origin + seconds:
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            futures.append(pool.submit(workload.run, workload.pick()))
            n += 1
        for future in futures:
            try:
                results.append(future.result())
            except httpx.HTTPError as exc:
                results.append(("transport", float("nan"), 599))
                print(f"   transport error: {exc}", file=sys.stderr)
    return results


def report(results: list[tuple[str, float, int]], seconds: float) -> tuple[float, int]:
    latencies = [r[1] for r in results if r[1] == r[1]]
    errors = [r for r in results if r[2] >= 500 or r[2] in (401, 403, 429)]
    p95 = percentile(latencies, 95)
    print(
        f"   {len(results)} requests in {seconds:.0f} s = {len(results) / seconds:.2f} req/s; "
        f"p50 {statistics.median(latencies) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"p99 {percentile(latencies, 99) * 1000:.0f} ms; errors {len(errors)}"
    )
    by_op = defaultdict(list)
    for op, latency, status in results:
        by_op[op].append((latency, status))
    for op, rows in sorted(by_op.items()):
        values = [r[0] for r in rows]
        statuses = sorted({r[1] for r in rows})
        print(
            f"     {op:<8} n={len(rows):<4} p50 {statistics.median(values) * 1000:6.0f} ms  "
            f"p95 {percentile(values, 95) * 1000:6.0f} ms  statuses {statuses}"
        )
    return p95, len(errors)


def check_invariants() -> list[str]:
    """What must hold after the load: nothing half-stored, nothing lost, nothing orphaned."""
    from django.conf import settings

    from audit.models import ErasureAudit
    from audit.selectors import erasure_receipt
    from audit.services import verify_chain
    from consent.models import ConsentRecord
    from diarization.models import DiarizationJob
    from enrollment.models import EnrollmentStatus, Speaker

    problems = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        unfinished = DiarizationJob.objects.exclude(status__in=["succeeded", "failed"]).count()
        incomplete = [e for e in ErasureAudit.objects.all() if not erasure_receipt(e)["complete"]]
        if not unfinished and not incomplete:
            break
        time.sleep(1)
    else:
        problems.append(f"{unfinished} jobs unfinished, {len(incomplete)} receipts incomplete")
    blob_root = Path(settings.BLOB_LOCAL_DIR)
    stored = {str(p.relative_to(blob_root)) for p in blob_root.rglob("*") if p.is_file()}
    expected: set[str] = set()
    for speaker in Speaker.objects.all():
        consents = list(ConsentRecord.objects.filter(speaker=speaker))
        if speaker.enrollment_status == EnrollmentStatus.EVICTED:
            left = {speaker.reference_blob_key, *(c.recording_blob_key for c in consents)}
            if left & stored:
                problems.append(f"erased speaker {speaker.id} still has {sorted(left & stored)}")
            continue
        if len(consents) != 1:
            problems.append(f"speaker {speaker.id} has {len(consents)} consent records")
        for key in [speaker.reference_blob_key, *(c.recording_blob_key for c in consents)]:
            expected.add(key)
            if key not in stored:
                problems.append(f"speaker {speaker.id} lacks blob {key}")
    for job in DiarizationJob.objects.all():
        if job.audio_deleted_at is None:
            problems.append(f"job {job.id} kept its upload")
    orphans = stored - expected
    if orphans:
        problems.append(f"{len(orphans)} orphan blobs, e.g. {sorted(orphans)[:3]}")
    verdict = verify_chain()
    if not verdict.intact:
        problems.append(f"audit trail broken at {verdict.first_broken_seq}: {verdict.problem}")
    counts = {
        "speakers": Speaker.objects.count(),
        "erased": Speaker.objects.filter(enrollment_status="evicted").count(),
        "jobs": DiarizationJob.objects.count(),
        "audit events checked": verdict.events_checked,
        "blobs stored": len(stored),
    }
    print(f"   state after the run: {counts}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=300.0, help="seconds at the rate")
    parser.add_argument("--rate", type=float, help="skip the ramp and run at this rate")
    parser.add_argument("--ramp", default="2,4,6,8,10", help="rates tried, 30 s each")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    random.seed(args.seed)
    np.random.seed(args.seed)

    isolate_environment("load")
    manage("create_tenant", "load")
    key = manage("create_api_key", "load")
    port = free_port()
    with (
        running_service(port, "node-1"),
        httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=120,
        ) as client,
    ):
        workload = Workload(client, recordings())
        for _ in range(4):
            workload.run("enroll")  # a pool of speakers, and the models loaded
        rate = args.rate
        if rate is None:
            print("ramp (30 s per rate):")
            for candidate in [float(r) for r in args.ramp.split(",")]:
                print(f"  {candidate:.1f} req/s")
                p95, errors = report(drive(workload, candidate, 30.0), 30.0)
                if p95 >= 1.0 or errors:
                    break
                rate = candidate
            if rate is None:
                sys.exit("even the lowest ramp rate missed p95 < 1 s")
        print(f"\nsustained run: {rate:.1f} req/s for {args.duration:.0f} s")
        p95, errors = report(drive(workload, rate, args.duration), args.duration)
        print("\ninvariants:")
        problems = check_invariants()
        for problem in problems:
            print(f"   VIOLATED: {problem}")
        if not problems:
            print("   all hold")


if __name__ == "__main__":
    main()
