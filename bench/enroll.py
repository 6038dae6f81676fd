"""Enrollment benchmark over real HTTP against `manage.py run_service`.

Enrolls speakers with a 10 s reference and a 4 s consent recording at
concurrency 1, 4 and 16, and prints latency percentiles, throughput, the
preflight's real-time factor (processing seconds per audio second, as the
service measures it) and the API process's peak RSS.

    .venv/bin/python bench/enroll.py            # starts the service itself
    .venv/bin/python bench/enroll.py --requests 20

Uses LibriSpeech from ../shared/data when present, else the pyannote sample.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    api_process_pid,
    free_port,
    isolate_environment,
    librispeech_speakers,
    manage,
    peak_rss_mb,
    percentile,
    running_service,
    speech_of_length,
    summary,
)
from tests import audio  # noqa: E402
from tests.audio import encode  # noqa: E402


def recordings() -> list[tuple[bytes, bytes]]:
    speakers = librispeech_speakers()
    pairs = []
    if speakers:
        for files in speakers.values():
            pairs.append(
                (
                    encode(speech_of_length(files[1:], 10.0)),
                    encode(speech_of_length(files[:1], 4.0)),
                )
            )
        return pairs
    reference = np.concatenate([audio.clip(audio.SPEAKER_A)] * 2)[: 10 * 16_000]
    return [(encode(reference), encode(audio.clip(audio.SPEAKER_A_CONSENT)))]


def enroll(client: httpx.Client, base: str, key: str, pair: tuple[bytes, bytes], n: int):
    started = time.perf_counter()
    response = client.post(
        f"{base}/v1/modules/scaiecho/speakers",
        headers={"Authorization": f"Bearer {key}"},
        data={
            "display_name": f"Bench speaker {n}",
            "language_primary": "en",
            "consent_user_full_name": f"Bench Speaker {n}",
            "consent_stated_purpose": "benchmark",
            "consent_text": "I consent to enrollment for diarization.",
        },
        files={
            "reference": ("r.wav", pair[0], "audio/wav"),
            "consent": ("c.wav", pair[1], "audio/wav"),
        },
        timeout=300,
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 201:
        raise RuntimeError(f"enrollment failed: {response.status_code} {response.text[:400]}")
    preflight = response.json()["data"]["preflight"]
    return elapsed, preflight["real_time_factor"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--requests", type=int, default=32, help="enrollments per concurrency level"
    )
    parser.add_argument("--levels", default="1,4,16")
    parser.add_argument(
        "--nodes",
        default="node-1",
        help="nodes run_service starts ('' for none: the 201 then skips fan-out)",
    )
    args = parser.parse_args()

    isolate_environment("enroll")
    manage("create_tenant", "bench")
    key = manage("create_api_key", "bench", "--scopes", "scaiecho:enroll")
    pairs = recordings()
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    with running_service(port, args.nodes) as service, httpx.Client() as client:
        api_pid = api_process_pid(service.pid)
        enroll(client, base, key, pairs[0], -1)  # first request loads the models
        print(f"{'conc':>4} {'n':>4}  latency                           throughput   preflight RTF")
        for level in [int(x) for x in args.levels.split(",")]:
            started = time.perf_counter()
            with ThreadPoolExecutor(level) as pool:
                results = list(
                    pool.map(
                        lambda n: enroll(client, base, key, pairs[n % len(pairs)], n),
                        range(args.requests),
                    )
                )
            wall = time.perf_counter() - started
            latencies = [r[0] for r in results]
            rtfs = [r[1] for r in results]
            print(
                f"{level:>4} {len(results):>4}  {summary(latencies)}  "
                f"{len(results) / wall:6.2f} req/s   "
                f"median {statistics.median(rtfs):.4f} p95 {percentile(rtfs, 95):.4f}"
            )
        print(
            f"API process peak RSS: {peak_rss_mb(api_pid):.0f} MB (nodes: {args.nodes or 'none'})"
        )


if __name__ == "__main__":
    main()
