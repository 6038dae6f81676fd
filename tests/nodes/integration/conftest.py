from __future__ import annotations

import pytest

from tests.factories import client_for, make_key, make_tenant
from tests.live import NodeProcess, node_environment


class Cluster:
    """The node processes a test starts; all are stopped when it ends."""

    def __init__(self, env: dict[str, str], log_dir):
        self.env = env
        self.log_dir = log_dir
        self.nodes: dict[str, NodeProcess] = {}

    def node(self, node_id: str) -> NodeProcess:
        if node_id not in self.nodes:
            self.nodes[node_id] = NodeProcess(node_id, self.env, self.log_dir)
        return self.nodes[node_id]

    def start(self, *node_ids: str) -> list[NodeProcess]:
        started = [self.node(n).start(wait=False) for n in node_ids]
        for node in started:
            node.wait_until_candidate()
        return started

    def stop_all(self) -> None:
        for node in self.nodes.values():
            node.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{p.log()}" for n, p in self.nodes.items())


@pytest.fixture
def cluster(live_db, moto_server, tmp_path, settings):
    settings.ENROLLMENT_ACK_WAIT_S = 20.0
    nodes = Cluster(node_environment(moto_server, settings.S3_BUCKET), tmp_path)
    try:
        yield nodes
    finally:
        nodes.stop_all()
        print(nodes.logs())  # pytest shows captured output only for a failing test


@pytest.fixture(scope="session")
def loaded_models():
    """Loads the preflight's models up front, so a slow first load cannot outlast a heartbeat."""
    import numpy as np

    from nodes.engine import get_engine
    from nodes.vad import get_vad

    get_vad().speech_regions(np.zeros(16_000, dtype=np.float32))
    get_engine().voiceprint(np.random.default_rng(0).normal(0, 0.01, 32_000).astype(np.float32))


@pytest.fixture
def api(cluster, loaded_models):
    return client_for(make_key(make_tenant())[1])
