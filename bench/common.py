"""Shared helpers for the benchmarks: start the real service, make audio, summarise timings."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np

if TYPE_CHECKING:
    import httpx

ROOT = Path(__file__).resolve().parent.parent
LIBRISPEECH = ROOT.parent / "shared" / "data" / "librispeech-dev"
RATE = 16_000


def isolate_environment(name: str) -> None:
    """Points this process and its children at a fresh database and Redis of their own.

    With DATABASE_URL set, a database ``bench_<name>`` (or ``BENCH_DATABASE``) is (re)created
    on that server; without it, an embedded server keeps its data under .data/bench-<name>.
    Redis: with REDIS_URL on TCP, database 14 (or ``BENCH_REDIS_DB``); without it, an embedded
    one. Nothing a benchmark writes lands in the service's own data.
    """
    from urllib.parse import urlparse, urlunparse

    import psycopg

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    # A benchmark runs on one's own machine against throwaway data, as `make run` does.
    os.environ.setdefault("SCAIECHO_ENV", "local")
    os.environ["BLOB_STORE"] = "local"
    # Benchmarks enroll the same few voices many times in a tenant: each would be held for
    # review as a duplicate (the default policy) and never fan out.
    os.environ["PREFLIGHT_DUPLICATE_POLICY"] = "warn"
    data_dir = ROOT / ".data" / f"bench-{name}"
    if data_dir.exists():
        import shutil

        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    os.environ["SCAIECHO_DATA_DIR"] = str(data_dir)
    os.environ["BLOB_LOCAL_DIR"] = str(data_dir / "blobs")
    if url := os.environ.get("DATABASE_URL"):
        database = os.environ.get("BENCH_DATABASE") or f"bench_{name}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{database}"')
        os.environ["DATABASE_URL"] = urlunparse(urlparse(url)._replace(path=f"/{database}"))
    # The benchmark's own throwaway database, reached as the server's superuser (always so on
    # the embedded one): the processes it starts warn about that role instead of refusing.
    os.environ.setdefault("DATABASE_ROLE_CHECK", "warn")
    if (redis_url := os.environ.get("REDIS_URL")) and redis_url.startswith("redis://"):
        redis_db = os.environ.get("BENCH_REDIS_DB", "14")
        os.environ["REDIS_URL"] = urlunparse(urlparse(redis_url)._replace(path=f"/{redis_db}"))
        import redis

        redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()

    # Without DATABASE_URL / REDIS_URL, embedded servers of this benchmark's own, stopped at exit.
    from config import embedded

    servers = contextlib.ExitStack()
    servers.enter_context(embedded.running())
    atexit.register(servers.close)

    import django

    django.setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def manage(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env or os.environ.copy(),
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, timeout_s: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2.0)
            return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError(f"service did not answer at {url} within {timeout_s} s")


@contextmanager
def running_service(port: int, nodes: str = "node-1") -> Iterator[subprocess.Popen[bytes]]:
    """`manage.py run_service` as a user starts it, stopped afterwards; logs in its data dir."""
    log = Path(os.environ.get("SCAIECHO_DATA_DIR", ROOT / ".data")) / "service.log"
    service = subprocess.Popen(
        [sys.executable, "manage.py", "run_service", "--port", str(port), "--nodes", nodes],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/v1/openapi.json")
        yield service
    except RuntimeError:
        print(log.read_text()[-4000:], file=sys.stderr)
        raise
    finally:
        service.terminate()
        service.wait(timeout=60)


def api_process_pid(service_pid: int) -> int:
    """The uvicorn child of run_service (the process that runs the preflight)."""
    import psutil

    for child in psutil.Process(service_pid).children(recursive=True):
        if "uvicorn" in " ".join(child.cmdline()):
            return int(child.pid)
    raise RuntimeError("no uvicorn process under run_service")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        chunks = [
            out.to_ndarray()[0]
            for frame in container.decode(audio=0)
            for out in resampler.resample(frame)
        ]
    return np.concatenate(chunks)


def librispeech_speakers() -> dict[str, list[Path]]:
    if not LIBRISPEECH.is_dir():
        return {}
    return {d.name: sorted(d.rglob("*.flac")) for d in sorted(LIBRISPEECH.iterdir()) if d.is_dir()}


def speech_of_length(files: list[Path], seconds: float) -> np.ndarray:
    pieces, total = [], 0
    for path in files:
        samples = decode(path)
        pieces.append(samples)
        total += samples.size
        if total >= seconds * RATE:
            break
    return np.concatenate(pieces)[: int(seconds * RATE)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> str:
    p50, p95 = statistics.median(values) * 1000, percentile(values, 95) * 1000
    return f"p50 {p50:7.1f} ms  p95 {p95:7.1f} ms"


@contextmanager
def running_api(key: str) -> Iterator[httpx.Client]:
    """The API alone under uvicorn, and a client that holds ``key``."""
    import httpx

    port = free_port()
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
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    try:
        wait_for_http(f"{base}/v1/openapi.json")
        yield client
    finally:
        client.close()
        api.terminate()
        api.wait(timeout=60)


def enroll_over_http(client: httpx.Client, reference: bytes, consent: bytes) -> dict[str, Any]:
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
    return dict(response.json()["data"])
