"""Every long-running process checks its database role as it starts: the API (uvicorn's
lifespan), the orchestrator's Celery worker, a node (``run_node``) and ``run_service`` refuse
a role that could lift the immutable tables' protection, and start as the service's role."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests import live

pytestmark = [pytest.mark.live, pytest.mark.slow]

# Each as an operator starts it (README, "Nodes and scaling out"); {port}: a free port.
ENTRY_POINTS = {
    "api": ["-m", "uvicorn", "config.asgi:application", "--port", "{port}"],
    "worker": ["-m", "celery", "-A", "config", "worker", "--pool", "solo", "-Q", "orchestrator"]
    + ["--without-gossip", "--without-mingle", "--hostname", "roles@%h", "--loglevel", "INFO"],
    "node": ["manage.py", "run_node", "roles-node"],
    "run_service": ["manage.py", "run_service", "--port", "{port}", "--nodes", ""],
}
# What each process names itself in the check.
PROCESS_NAMES = {
    "api": "api",
    "worker": "worker roles@",
    "node": "node roles-node",
    "run_service": "run_service",
}


def start(entry_point: str, database_url: str, mode: str, log_path, port: int = 0):
    env = {**os.environ, "DATABASE_URL": database_url, "DATABASE_ROLE_CHECK": mode}
    env.pop("DATABASE_OWNER_URL", None)
    env.update({"PYTHONUNBUFFERED": "1", "TORCH_NUM_THREADS": "1"})
    command = [sys.executable] + [a.format(port=port) for a in ENTRY_POINTS[entry_point]]
    return subprocess.Popen(
        command, cwd=live.ROOT, env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT
    )


def serves(port: int, process: subprocess.Popen[bytes]) -> bool:
    """The API answers (or its process is gone, which the caller then reports)."""
    return live.answers(f"http://127.0.0.1:{port}/healthz") or process.poll() is not None


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def said(output: str, entry_point: str, words: str) -> bool:
    """Whether the process, under the name it gives itself in the check, said ``words``."""
    name = re.escape(PROCESS_NAMES[entry_point])
    return re.search(rf"{name}\S* {re.escape(words)}", output) is not None


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_a_process_refuses_to_start_as_a_role_that_could_lift_the_protection(
    live_db, tmp_path, entry_point
):
    """The suite's own role, the server's superuser, is such a role."""
    log = tmp_path / "process.log"
    process = start(entry_point, live.test_database_url(), "refuse", log, live.free_port())
    try:
        returncode = process.wait(timeout=180)
    finally:
        stop(process)
    output = log.read_text(errors="replace")
    assert returncode != 0, output
    assert said(output, entry_point, "connects as database role"), output
    assert "which is a superuser: it could lift the protection" in output
    assert said(output, entry_point, "refuses to start: connect as a role that owns none")
    # Nothing of the service started: no API line from run_service, no node online.
    assert "API on http" not in output and "online;" not in output


@pytest.mark.parametrize("entry_point", ["api", "worker"])
def test_a_process_starts_as_the_service_role(live_db, application_role, tmp_path, entry_point):
    log = tmp_path / "process.log"
    port = live.free_port()
    process = start(entry_point, application_role.url(), "refuse", log, port)
    try:
        if entry_point == "api":
            live.wait_for(lambda: serves(port, process), timeout_s=120, what="the API")
        else:
            live.wait_for(
                lambda: "ready." in log.read_text() or process.poll() is not None,
                timeout_s=120,
                what="the worker",
            )
        assert process.poll() is None, log.read_text()
    finally:
        stop(process)
    words = f"connects as database role {application_role.name}, which cannot alter"
    assert said(log.read_text(errors="replace"), entry_point, words)


def test_with_warn_the_api_starts_and_says_why(live_db, tmp_path):
    log = tmp_path / "process.log"
    port = live.free_port()
    process = start("api", live.test_database_url(), "warn", log, port)
    try:
        live.wait_for(lambda: serves(port, process), timeout_s=120, what="the API")
        assert process.poll() is None, log.read_text()
    finally:
        stop(process)
    output = log.read_text(errors="replace")
    assert said(output, "api", "connects as database role")
    assert "which is a superuser" in output
    assert "starting anyway (DATABASE_ROLE_CHECK=warn)" in output
