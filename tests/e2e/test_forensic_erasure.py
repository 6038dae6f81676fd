"""Forensic erasure: after DELETE, a speaker's name, consent text and description are nowhere.

A speaker whose personal fields carry a unique marker is enrolled through the API, named in a
diarization run by a real node process, and owed a webhook that keeps failing; then erased.
Every text, JSON and binary column of every table, every key and value in Redis (the broker
included, where the pending retry waits), every file the test's processes wrote (local blob
store, data directory, logs) and every object version of the S3 store is then searched for
the marker: there must be none.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import redis
from django.db import connection

from common.blobs import get_blob_store
from tests import audio
from tests.factories import client_for, enrollment_form, make_key, make_tenant, upload
from tests.live import wait_for
from tests.webhooks import WebhookReceiver

pytestmark = [pytest.mark.live, pytest.mark.slow]

SPEAKERS = "/v1/modules/scaiecho/speakers"
DIARIZE = "/v1/modules/scaiecho/diarize"
SEARCHED_TYPES = ("text", "character varying", "character", "json", "jsonb", "bytea")


@pytest.fixture(params=["local", "s3"])
def forensic_cluster(request, cluster, tmp_path, settings):
    """The cluster on the blob store under test, writing its data directory under tmp_path."""
    cluster.env.update(
        {
            "WEBHOOK_ALLOW_PRIVATE_HOSTS": "true",
            # The retry after the first failed delivery is still pending when the erasure runs.
            "WEBHOOK_BACKOFF_S": "4",
            "WEBHOOK_MAX_ATTEMPTS": "3",
            "SCAIECHO_DATA_DIR": str(tmp_path / "data"),
            # The keys stay those of the test process, which wrapped the data keys.
            "DATA_KEY_ENCRYPTION_KEY_FILE": str(settings.DATA_KEY_ENCRYPTION_KEY_FILE),
            "AUDIT_SIGNING_KEY_FILE": str(settings.AUDIT_SIGNING_KEY_FILE),
        }
    )
    if request.param == "local":
        blobs = tmp_path / "blobs"
        settings.BLOB_STORE = "local"
        settings.BLOB_LOCAL_DIR = blobs
        get_blob_store.cache_clear()
        cluster.env.update({"BLOB_STORE": "local", "BLOB_LOCAL_DIR": str(blobs)})
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = True
    return request.param


def database_hits(marker: str) -> list[str]:
    """``table.column`` of every value in the database that contains the marker."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "JOIN information_schema.tables USING (table_schema, table_name) "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' "
            "AND data_type = ANY(%s)",
            [list(SEARCHED_TYPES)],
        )
        columns = cursor.fetchall()
        hits = []
        for table, column, data_type in columns:
            if data_type == "bytea":
                condition = f'position(%s::bytea in "{column}") > 0'
            else:
                condition = f'"{column}"::text LIKE %s'
            needle = marker if data_type == "bytea" else f"%{marker}%"
            cursor.execute(f'SELECT count(*) FROM "{table}" WHERE {condition}', [needle])
            if cursor.fetchone()[0]:
                hits.append(f"{table}.{column}")
    return hits


def redis_hits(marker: str, urls: set[str]) -> list[str]:
    """Keys of the Redis databases (live state and the Celery broker) whose name or value
    holds the marker."""
    hits = []
    for url in sorted(urls):
        hits.extend(f"{url}: {key}" for key in _redis_hits(redis.Redis.from_url(url), marker))
    return hits


def _redis_hits(client: redis.Redis, marker: str) -> list[str]:
    needle = marker.encode()
    hits = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            values = [client.get(key) or b""]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "hash":
            values = [b"%s=%s" % item for item in client.hgetall(key).items()]
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "zset":
            values = [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            values = [
                b"".join(k + v for k, v in fields.items())
                for _, fields in client.xrange(key, "-", "+")
            ]
        else:
            values = []
        if needle in key or any(needle in value for value in values):
            hits.append(key.decode(errors="replace"))
    return hits


def file_hits(root: Path, marker: str) -> list[str]:
    needle = marker.encode()
    return [
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes()
    ]


def s3_hits(marker: str, speaker_id: str) -> list[str]:
    """Object versions (and delete markers) that hold the marker or belong to the speaker."""
    store = get_blob_store()
    client, bucket = store.client, store.bucket
    needle = marker.encode()
    hits = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for version in page.get("Versions", []):
            key = version["Key"]
            obj = client.get_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])
            metadata = json.dumps(obj.get("Metadata", {})).encode()
            if speaker_id in key or needle in obj["Body"].read() or needle in metadata:
                hits.append(f"{key}@{version['VersionId']}")
        hits.extend(
            f"{m['Key']}@{m['VersionId']} (delete marker)"
            for m in page.get("DeleteMarkers", [])
            if speaker_id in m["Key"]
        )
    return hits


def test_an_erased_speaker_leaves_no_trace(
    forensic_cluster, cluster, tmp_path, loaded_models, settings
):
    marker = f"forensic{uuid.uuid4().hex}"
    cluster.start("node-a")
    cluster.orchestrator()
    api = client_for(make_key(make_tenant())[1])
    form = enrollment_form(
        display_name=f"Alice {marker}",
        consent_user_full_name=f"Alice {marker}",
        consent_text=f"I, Alice {marker}, consent to enrolling my voice for diarization.",
        description=f"Support lead {marker}",
        reference=upload("a.wav", audio.encode(audio.clip([(10.6, 14.45)])), "audio/wav"),
        consent=upload("c.wav", audio.encode(audio.clip(audio.SPEAKER_A_CONSENT)), "audio/wav"),
    )
    response = api.post(SPEAKERS, form, format="multipart")
    assert response.status_code == 201, response.content
    speaker_id = response.json()["data"]["id"]

    hook = WebhookReceiver([500])
    try:
        job = api.post(
            DIARIZE,
            {
                "audio": upload("meeting.wav", audio.encode(audio.sample()), "audio/wav"),
                "webhook": hook.url,
            },
            format="multipart",
        ).json()["data"]

        def finished() -> dict | None:
            body = api.get(f"{DIARIZE}/{job['id']}").json()["data"]
            return body if body["status"] in ("succeeded", "failed") else None

        body = wait_for(finished, timeout_s=120, interval_s=0.2, what="the diarization")
        assert body["status"] == "succeeded", body
        # The speaker is named while enrolled: the marker did travel the result's paths.
        named = {s["speaker_label"]: s.get("display_name") for s in body["result"]["segments"]}
        assert named.get(speaker_id) == f"Alice {marker}"
        wait_for(lambda: hook.received, timeout_s=30, what="the first webhook attempt")
        assert marker.encode() in hook.received[0][1]
        assert database_hits(marker), "the marker was never stored: the search proves nothing"

        erasure = api.delete(f"{SPEAKERS}/{speaker_id}")
        assert erasure.status_code == 200, erasure.content
        attempts_before = len(hook.received)
        assert attempts_before < 3, "every webhook attempt ran before the erasure"

        # The retry still pending goes out without the name: the label reads as erased.
        wait_for(lambda: len(hook.received) > attempts_before, timeout_s=30, what="the retry")
        retried = json.loads(hook.received[-1][1])
        assert marker not in json.dumps(retried)
        erased = [s for s in retried["result"]["segments"] if s["speaker_label"] == speaker_id]
        assert erased and all(s.get("erased") is True for s in erased)
    finally:
        hook.close()

    shown = api.get(f"{DIARIZE}/{job['id']}").json()["data"]
    assert marker not in json.dumps(shown)
    assert api.get(f"{DIARIZE}/{job['id']}/result?format=srt").content.count(b"(erased)")

    assert database_hits(marker) == []
    assert redis_hits(marker, {settings.REDIS_URL, settings.CELERY_BROKER_URL}) == []
    assert file_hits(tmp_path, marker) == []
    if forensic_cluster == "s3":
        assert s3_hits(marker, speaker_id) == []
    else:
        left = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file() and speaker_id in str(p)]
        assert left == []
