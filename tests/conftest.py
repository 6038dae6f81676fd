from __future__ import annotations

import logging
import os
import uuid
import warnings

import pytest

# Fake credentials so boto3 never looks for real ones; moto intercepts every call.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

from tests.factories import admin_key, api, tenant  # noqa: E402,F401  (fixtures)


@pytest.fixture(scope="session")
def moto_server():
    """A real S3 endpoint (moto in server mode) that node processes can reach."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def s3_blob_store(request, settings):
    """Every test stores blobs in a versioned, encrypted S3 bucket served by moto.

    Tests marked ``live`` share it with other processes through moto's server;
    the others use moto's in-process mock.
    """
    from moto import mock_aws

    from common.blobs import get_blob_store

    settings.BLOB_STORE = "s3"
    settings.S3_BUCKET = f"scaiecho-test-{uuid.uuid4().hex[:8]}"
    get_blob_store.cache_clear()
    if request.node.get_closest_marker("live"):
        settings.S3_ENDPOINT_URL = request.getfixturevalue("moto_server")
        yield get_blob_store()
    else:
        settings.S3_ENDPOINT_URL = None
        with mock_aws():
            yield get_blob_store()
    get_blob_store.cache_clear()


@pytest.fixture(autouse=True)
def clean_node_registry():
    from common.redis_client import redis_client

    client = redis_client()
    for key in client.scan_iter(match="scaiecho:*"):
        client.delete(key)
    yield


@pytest.fixture(scope="session")
def live_test_database(django_db_setup, django_db_blocker):
    """The test database, also in a session of live tests alone.

    pytest-django creates it only for sessions with tests that use ``db``; live tests
    commit for real and must never run against the configured database itself.
    """
    from django.db import connection
    from django.test.utils import setup_databases, teardown_databases

    if connection.settings_dict["NAME"] == connection.settings_dict["TEST"]["NAME"]:
        yield
        return
    with django_db_blocker.unblock():
        created = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    yield
    with django_db_blocker.unblock():
        teardown_databases(created, verbosity=0)


@pytest.fixture
def live_db(live_test_database, django_db_blocker, s3_blob_store):
    """Committed data that other processes (nodes, the service) can see; wiped afterwards."""
    from tests.live import clear_redis, wipe_database

    with django_db_blocker.unblock():
        clear_redis()
        wipe_database()
        try:
            yield
        finally:
            clear_redis()
            wipe_database()


@pytest.fixture
def cluster(live_db, moto_server, tmp_path, settings):
    settings.ENROLLMENT_ACK_WAIT_S = 20.0
    from tests.live import Cluster, node_environment

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

    from voice.engines import get_engine
    from voice.vad import get_vad

    get_vad().speech_regions(np.zeros(16_000, dtype=np.float32))
    get_engine().voiceprint(np.random.default_rng(0).normal(0, 0.01, 32_000).astype(np.float32))
