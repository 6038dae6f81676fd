"""`manage.py run_service` without DATABASE_URL / REDIS_URL (what `make run` does on a bare
machine) starts its own embedded servers, and a signal stops everything it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.live import ROOT, answers, free_port, wait_for

pytestmark = pytest.mark.slow

NODE = "shutdown-node"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by both runs: the second also shows that the first left its data reusable."""
    return tmp_path_factory.mktemp("data")


def processes_of(service: psutil.Process | None, data_dir: Path) -> set[psutil.Process]:
    """The service's descendants, and the processes of its data directory: the embedded servers,
    which run as daemons (re-parented), with their children."""
    found = set(service.children(recursive=True)) if service else set()
    for process in psutil.process_iter():
        try:
            if str(data_dir) in " ".join(process.cmdline()):
                found |= {process, *process.children(recursive=True)}
        except psutil.Error:
            pass  # gone meanwhile, or not ours to read
    return found


def alive(process: psutil.Process) -> bool:
    try:
        # A zombie has exited; only init, not the service, may still have to reap it.
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def describe(processes: set[psutil.Process]) -> str:
    lines = []
    for process in processes:
        try:
            lines.append(f"{process.pid} {process.name()}: {' '.join(process.cmdline())[:200]}")
        except psutil.Error:
            lines.append(f"{process.pid} (gone)")
    return "\n".join(sorted(lines))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_everything_the_service_started(data_dir, tmp_path, signum):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update({"SCAIECHO_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"})
    env["TORCH_NUM_THREADS"] = "1"
    port = free_port()
    log = tmp_path / "service.log"
    service = subprocess.Popen(
        [sys.executable, "manage.py", "run_service", "--port", str(port), "--nodes", NODE],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a process group of its own, as a shell gives a command
    )
    try:
        wait_for(
            lambda: answers(f"http://127.0.0.1:{port}/v1/openapi.json"),
            timeout_s=180,
            what="the API",
        )
        # Both Celery workers (orchestrator, node) are up once each has logged "ready.".
        wait_for(
            lambda: (
                f"node {NODE} (pool " in (text := log.read_text()) and text.count("ready.") >= 2
            ),
            timeout_s=180,
            what="the node and the worker",
        )
        started = processes_of(psutil.Process(service.pid), data_dir)
        listing = describe(started)
        for part in ("postgres -D", "redis-server", "uvicorn", "celery", f"run_node {NODE}"):
            assert part in listing, listing

        os.killpg(service.pid, signum)  # a terminal's Ctrl-C signals the whole group
        assert service.wait(timeout=120) == 0
    finally:
        if service.poll() is None:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait()
        print(log.read_text()[-8000:])  # pytest shows captured output only for a failing test

    try:
        wait_for(lambda: not any(alive(p) for p in started), timeout_s=10, what="every process")
    except AssertionError:
        pytest.fail("still running:\n" + describe({p for p in started if alive(p)}))
    assert not {p for p in processes_of(None, data_dir) if alive(p)}
