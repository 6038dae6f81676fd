"""`make run` on the embedded server: `run_service` creates the owner and application roles,
migrates as the owner, and every process of the service (API, worker, node) connects as the
application role, which the start check, set to refuse, lets through."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from common.immutability import IMMUTABLE_TABLES
from config.embedded import APPLICATION_ROLE, OWNER_ROLE
from tests.e2e.test_run_service import enroll_alice
from tests.live import ROOT, answers, free_port, wait_for

pytestmark = pytest.mark.slow

NODE = "roles-node"
SPEAKERS = "/v1/modules/scaiecho/speakers"


def superuser_url(data_dir: Path) -> str:
    """The embedded server, as the superuser that created the roles (the test looks on)."""
    # postmaster.pid: pid, data directory, start time, port, socket directory, ...
    lines = (data_dir / "postgres" / "postmaster.pid").read_text().splitlines()
    return f"postgresql://postgres@/postgres?host={lines[4]}&port={lines[3]}"


def test_run_service_migrates_as_the_owner_and_serves_as_the_application_role(tmp_path):
    data_dir = tmp_path / "data"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "DATABASE_OWNER_URL", "REDIS_URL"}
    }
    env.update(
        {
            "SCAIECHO_DATA_DIR": str(data_dir),
            "DATABASE_ROLE_CHECK": "refuse",
            # Connections outlive a request, so that the API's is there to be seen.
            "DATABASE_CONN_MAX_AGE": "600",
            "ENROLLMENT_ACK_WAIT_S": "30",
            "PYTHONUNBUFFERED": "1",
            "TORCH_NUM_THREADS": "1",
        }
    )
    port = free_port()
    log = tmp_path / "service.log"
    service = subprocess.Popen(
        [sys.executable, "manage.py", "run_service", "--port", str(port), "--nodes", NODE],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        key = wait_for(
            lambda: (m := re.search(r"SCAIECHO_API_KEY=(\S+)", log.read_text())) and m.group(1),
            timeout_s=180,
            what="the demo key",
        )
        wait_for(lambda: answers(f"{base}/v1/openapi.json"), timeout_s=180, what="the API")
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        wait_for(
            lambda: any(
                n["candidate"] for n in client.get("/v1/modules/scaiecho/nodes").json()["data"]
            ),
            timeout_s=180,
            what="the node",
        )

        # Every immutable table takes its rows from the application role: the consent record
        # and audit events from the API, the erasure receipt, the node's confirmation.
        enrolled = enroll_alice(client)
        assert enrolled.status_code == 201, enrolled.text
        speaker = enrolled.json()["data"]
        assert speaker["enrollment_status"] == "ready"
        receipt = client.delete(f"{SPEAKERS}/{speaker['id']}").json()["data"]
        wait_for(
            lambda: client.get(f"/v1/modules/scaiecho/erasures/{receipt['audit_id']}").json()[
                "data"
            ]["complete"],
            what="the node's eviction",
        )

        with psycopg.connect(superuser_url(data_dir), autocommit=True) as admin:
            connected = admin.execute(
                "SELECT DISTINCT usename::text FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchall()
            owners = admin.execute(
                "SELECT DISTINCT relowner::regrole::text FROM pg_class "
                "WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
            ).fetchall()
            privileges = admin.execute(
                "SELECT t, has_table_privilege(%s, t, 'INSERT'), "
                "has_table_privilege(%s, t, 'UPDATE'), has_table_privilege(%s, t, 'DELETE') "
                "FROM unnest(%s::text[]) t ORDER BY t",
                [APPLICATION_ROLE] * 3 + [list(IMMUTABLE_TABLES)],
            ).fetchall()
        # The owner's credentials stayed with run_service.
        children = psutil.Process(service.pid).children(recursive=True)
        assert children
        given_the_owner = [c.cmdline() for c in children if "DATABASE_OWNER_URL" in c.environ()]
        output = log.read_text()
    finally:
        if service.poll() is None:
            os.killpg(service.pid, signal.SIGTERM)
        try:
            service.wait(timeout=120)
        finally:
            if service.poll() is None:
                os.killpg(service.pid, signal.SIGKILL)
                service.wait()
            print(log.read_text()[-8000:])  # pytest shows captured output only for a failing test

    # The service's connections (the API's among them) are all the application role's; the
    # owner's, which migrated, was closed before anything started.
    assert connected == [(APPLICATION_ROLE,)]
    assert given_the_owner == []
    assert owners == [(OWNER_ROLE,)]
    assert privileges == [(table, True, False, False) for table in sorted(IMMUTABLE_TABLES)]
    assert f"as role {APPLICATION_ROLE}); Ctrl-C stops." in output
    checked = f"connects as database role {APPLICATION_ROLE}, which cannot alter"
    for process in ("run_service", "api", "worker celery@", f"node {NODE}", f"worker {NODE}@"):
        assert re.search(rf"{re.escape(process)}\S* {checked}", output), process
