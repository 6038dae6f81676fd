"""Real processes for integration tests: pyannote nodes, an S3 endpoint, committed data.

Node processes are started the way an operator starts them (``manage.py
run_node``) against the test database, the test Redis and a moto S3 server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
SCAIECHO_KEYS = ("scaiecho:*", "node.*", "orchestrator", "unacked*", "_kombu.*")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_database_url() -> str:
    conf = connection.settings_dict
    user = quote(conf["USER"] or "postgres")
    password = f":{quote(conf['PASSWORD'])}" if conf["PASSWORD"] else ""
    host = conf["HOST"] or ""
    if host.startswith("/"):
        return f"postgresql://{user}{password}@/{conf['NAME']}?host={quote(host)}"
    port = f":{conf['PORT']}" if conf["PORT"] else ""
    return f"postgresql://{user}{password}@{host}{port}/{conf['NAME']}"


def clear_redis() -> None:
    from common.redis_client import redis_client

    client = redis_client()
    for pattern in SCAIECHO_KEYS:
        for key in client.scan_iter(match=pattern):
            client.delete(key)


def wipe_database() -> None:
    """Empties every table between live tests.

    Test-only: the immutable tables refuse TRUNCATE, so their triggers are
    switched off for the wipe and switched back on (ALWAYS) right after.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE t.tgname LIKE '%%_immutable_%%'"
        )
        triggers = cursor.fetchall()
        cursor.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename NOT LIKE 'django_%%' AND tablename NOT LIKE 'auth_%%'"
        )
        tables = [row[0] for row in cursor.fetchall()]
        for table, trigger in triggers:
            cursor.execute(f'ALTER TABLE "{table}" DISABLE TRIGGER "{trigger}"')
        cursor.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")
        for table, trigger in triggers:
            cursor.execute(f'ALTER TABLE "{table}" ENABLE ALWAYS TRIGGER "{trigger}"')


class NodeProcess:
    def __init__(self, node_id: str, env: dict[str, str], log_dir: Path):
        self.node_id = node_id
        self.env = env
        self.log_path = log_dir / f"{node_id}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> NodeProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "run_node", self.node_id, "--loglevel", "INFO"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_until_candidate()
        return self

    def wait_until_candidate(self, timeout_s: float = 90.0) -> None:
        from nodes.registry import live_heartbeats

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"node {self.node_id} exited:\n{self.log()}")
            beat = live_heartbeats().get(self.node_id)
            if beat is not None and beat.pid == self.process.pid:
                return
            time.sleep(0.2)
        raise RuntimeError(f"node {self.node_id} never came online:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no goodbye, the heartbeat simply stops."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""


class OrchestratorProcess(NodeProcess):
    """The orchestrator's Celery worker (degraded completions, webhooks); with ``beat`` it also
    runs the periodic work (reconciliation, blob-erasure retries) as one such worker does."""

    def __init__(self, env: dict[str, str], log_dir: Path, beat: bool = False):
        super().__init__("orchestrator", env, log_dir)
        self.beat = beat

    def start(self, wait: bool = True) -> OrchestratorProcess:
        log = self.log_path.open("ab")
        beat = ["--beat", "--schedule", str(self.log_path.parent / "celerybeat-schedule")]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo"]
            + ["--queues", "orchestrator", "--without-gossip", "--without-mingle"]
            + ["--loglevel", "INFO"]
            + (beat if self.beat else []),
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            wait_for(lambda: "ready." in self.log(), timeout_s=90, what="the orchestrator worker")
        return self


def node_environment(s3_endpoint: str, bucket: str) -> dict[str, str]:
    env = os.environ.copy()
    env.update(
        {
            "DATABASE_URL": test_database_url(),
            "BLOB_STORE": "s3",
            "S3_ENDPOINT_URL": s3_endpoint,
            "S3_BUCKET": bucket,
            "NODE_HEARTBEAT_INTERVAL_S": "0.5",
            "NODE_HEARTBEAT_TTL_S": "3",
            "TORCH_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def wait_for(predicate, timeout_s: float = 60.0, interval_s: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class Cluster:
    """The node processes a test starts; all are stopped when it ends."""

    def __init__(self, env: dict[str, str], log_dir):
        self.env = env
        self.log_dir = log_dir
        self.nodes: dict[str, NodeProcess] = {}

    def node(self, node_id: str, **env: str) -> NodeProcess:
        """The node's process; ``env`` adds to the cluster's environment (e.g. NODE_POOL)."""
        if node_id not in self.nodes:
            self.nodes[node_id] = NodeProcess(node_id, {**self.env, **env}, self.log_dir)
        return self.nodes[node_id]

    def start(self, *node_ids: str) -> list[NodeProcess]:
        started = [self.node(n).start(wait=False) for n in node_ids]
        for node in started:
            node.wait_until_candidate()
        return started

    def orchestrator(self, beat: bool = False) -> OrchestratorProcess:
        if "orchestrator" not in self.nodes:
            self.nodes["orchestrator"] = OrchestratorProcess(self.env, self.log_dir, beat).start()
        return self.nodes["orchestrator"]  # type: ignore[return-value]

    def stop_all(self) -> None:
        for node in self.nodes.values():
            node.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{p.log()}" for n, p in self.nodes.items())


def answers(url: str, headers: dict[str, str] | None = None) -> bool:
    """Whether an HTTP service started by a test answers ``url`` with 200 yet."""
    import httpx

    try:
        return httpx.get(url, headers=headers, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
