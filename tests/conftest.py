from __future__ import annotations

import os
import warnings

import pytest

# Fake credentials so boto3 never looks for real ones; moto intercepts every call.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

from tests.factories import admin_key, api, tenant  # noqa: E402,F401  (fixtures)


@pytest.fixture(autouse=True)
def s3_blob_store(settings):
    """Every test stores blobs in a versioned, encrypted S3 bucket served by moto."""
    from moto import mock_aws

    from enrollment.blobs import get_blob_store

    settings.BLOB_STORE = "s3"
    settings.S3_ENDPOINT_URL = None
    settings.S3_BUCKET = "scaiecho-test"
    get_blob_store.cache_clear()
    with mock_aws():
        yield get_blob_store()
    get_blob_store.cache_clear()


@pytest.fixture(autouse=True)
def clean_node_registry():
    from nodes.registry import NODE_KEY_PREFIX, redis_client

    client = redis_client()
    for key in client.scan_iter(match=f"{NODE_KEY_PREFIX}*"):
        client.delete(key)
    yield
