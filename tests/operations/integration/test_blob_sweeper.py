"""The orphan sweeper, one test per way a recording can lose its owner: each shows the sweeper
removes that orphan and nothing else (a committed speaker's recordings, a live job's upload,
a blob whose intent is still young, the audit trail's checkpoints), with the local store and
with S3 (moto's server, a versioned bucket)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.db import OperationalError, connection
from django.utils import timezone

from audit.checkpoints import make_checkpoint
from audit.models import AuditEvent
from common.blobs import LocalBlobStore, get_blob_store
from consent.models import ConsentRecord
from diarization.models import DiarizationJob
from enrollment.models import Speaker
from operations.blob_sweeper import sweep_orphan_blobs
from storage.models import BlobIntent, BlobPurpose
from storage.services import register
from tests import audio
from tests.factories import client_for, enrollment_form, make_key, make_tenant, upload
from tests.faults import SwitchableProxy, sever
from tests.live import ROOT, free_port, node_environment

pytestmark = [pytest.mark.live]

SPEAKERS = "/v1/modules/scaiecho/speakers"
DIARIZE = "/v1/modules/scaiecho/diarize"


@pytest.fixture(params=["local", "s3"])
def blob_store(request, live_db, s3_blob_store, settings, tmp_path):
    """The store the service writes to: a local directory, or S3 served by moto's server."""
    if request.param == "s3":
        yield s3_blob_store
        return
    settings.BLOB_STORE = "local"
    settings.BLOB_LOCAL_DIR = tmp_path / "blobs"
    get_blob_store.cache_clear()
    yield get_blob_store()
    get_blob_store.cache_clear()


def stored(store) -> list[str]:
    """Every stored copy: each S3 version and delete marker, each file of the local store."""
    if isinstance(store, LocalBlobStore):
        if not store.root.is_dir():
            return []
        return sorted(
            path.relative_to(store.root).as_posix()
            for path in store.root.rglob("*")
            if path.is_file()
        )
    listing = store.client.list_object_versions(Bucket=store.bucket)
    entries = listing.get("Versions", []) + listing.get("DeleteMarkers", [])
    return sorted(entry["Key"] for entry in entries)


def intent_keys(*purposes: str) -> list[str]:
    intents = BlobIntent.objects.all()
    if purposes:
        intents = intents.filter(purpose__in=purposes)
    return sorted(intents.values_list("key", flat=True))


def age(keys: list[str], settings) -> None:
    """Makes these intents older than the grace period, as if the sweeper came an hour on."""
    stale = timezone.now() - timedelta(seconds=settings.BLOB_INTENT_GRACE_S + 60)
    assert BlobIntent.objects.filter(key__in=keys).update(created_at=stale) == len(keys)


def swept_events() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="storage.orphans_swept").order_by("seq"))


@dataclass
class Bystanders:
    """What the sweeper must leave alone."""

    copies: list[str]  # every stored copy (see ``stored``)
    young_key: str  # a blob whose intent is younger than the grace period
    speaker: Speaker


@pytest.fixture
def bystanders(blob_store, settings) -> Bystanders:
    settings.ENROLLMENT_ACK_WAIT_S = 0.0
    settings.AUDIT_SIGNING_KEY = (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    settings.AUDIT_VERIFY_KEY = ""
    tenant = make_tenant()
    api = client_for(make_key(tenant)[1])
    enrolled = api.post(SPEAKERS, enrollment_form(), format="multipart")
    assert enrolled.status_code == 201, enrolled.content
    job = api.post(
        DIARIZE, {"audio": upload("m.wav", audio.encode(audio.sample()))}, format="multipart"
    )
    assert job.status_code == 202, job.content
    young_key = f"diarize/{tenant.id}/{uuid.uuid4()}/audio"
    register(young_key, BlobPurpose.DIARIZATION_UPLOAD)
    blob_store.put(young_key, b"an upload under way")
    assert make_checkpoint() is not None
    copies = stored(blob_store)
    assert sum(key.startswith("audit-checkpoints/") for key in copies) == 2
    assert len(copies) == 2 + 1 + 1 + 2  # recordings, job upload, young blob, checkpoints
    assert intent_keys() == [young_key]
    return Bystanders(copies, young_key, Speaker.objects.get(id=enrolled.json()["data"]["id"]))


def assert_stored(store, bystanders: Bystanders, *others: str) -> None:
    """The store holds the bystanders' copies and ``others``, nothing more."""
    assert Counter(stored(store)) == Counter([*bystanders.copies, *others])


# --- enrollment: the commit's outcome stayed unknown ---------------------------------------


def lose_the_database(database, monkeypatch) -> None:
    sever(database.connection.info.backend_pid)
    # From here on no new connection reaches PostgreSQL: the outcome cannot be learnt.
    monkeypatch.setitem(database.settings_dict, "PORT", str(free_port()))


def test_an_enrollment_whose_outcome_stayed_unknown_and_did_not_commit_is_swept(
    blob_store, bystanders, at_enrollment_commit, monkeypatch, settings
):
    from enrollment import services

    monkeypatch.setattr(services, "COMMIT_OUTCOME_WAIT_S", 0.5)
    api = client_for(make_key(make_tenant())[1])
    # The connection dies as COMMIT goes out: the server rolls the transaction back.
    at_enrollment_commit(before=lambda database: lose_the_database(database, monkeypatch))

    response = api.post(SPEAKERS, enrollment_form(), format="multipart")

    assert response.status_code == 503, response.content
    monkeypatch.undo()
    connection.close()
    assert Speaker.objects.count() == 1 and ConsentRecord.objects.count() == 1
    orphans = intent_keys(BlobPurpose.ENROLLMENT_REFERENCE, BlobPurpose.ENROLLMENT_CONSENT)
    assert len(orphans) == 2
    assert_stored(blob_store, bystanders, *orphans)  # kept, the outcome unknown

    assert sweep_orphan_blobs().removed == []  # within the grace period nothing goes
    age(orphans, settings)
    report = sweep_orphan_blobs()

    assert sorted(blob["key"] for blob in report.removed) == orphans
    assert all(blob["versions"] == 1 for blob in report.removed)
    assert report.failed == [] and report.owned == []
    assert_stored(blob_store, bystanders)
    assert intent_keys() == [bystanders.young_key]
    (event,) = swept_events()
    assert event.actor == "system:blob-sweeper"
    assert sorted(blob["key"] for blob in event.details["removed"]) == orphans
    assert event.details["failed"] == []


def test_an_enrollment_whose_outcome_stayed_unknown_but_committed_keeps_everything(
    blob_store, bystanders, at_enrollment_commit, monkeypatch, settings
):
    from enrollment import services

    monkeypatch.setattr(services, "COMMIT_OUTCOME_WAIT_S", 0.5)
    api = client_for(make_key(make_tenant())[1])

    def commit_then_lose_the_database(database):
        lose_the_database(database, monkeypatch)
        raise OperationalError("server closed the connection unexpectedly")

    at_enrollment_commit(after=commit_then_lose_the_database)

    response = api.post(SPEAKERS, enrollment_form(), format="multipart")

    assert response.status_code == 503, response.content
    monkeypatch.undo()
    connection.close()
    speaker = Speaker.objects.exclude(id=bystanders.speaker.id).get()
    consent = ConsentRecord.objects.get(speaker=speaker)
    owned = [speaker.reference_blob_key, consent.recording_blob_key]
    # The intents were cleared by the transaction that committed the rows.
    assert intent_keys() == [bystanders.young_key]

    report = sweep_orphan_blobs()

    assert report.removed == [] and report.failed == [] and report.owned == []
    assert_stored(blob_store, bystanders, *owned)
    assert intent_keys() == [bystanders.young_key]
    assert swept_events() == []


# --- enrollment: rolled back, and the clean-up failed with the store ------------------------


class StoreOutage:
    """Makes the blob store fail for real and recover: S3 stalls behind a proxy (every call
    runs into the S3 timeouts), a local store's directory is replaced by a file."""

    def __init__(self, store, settings) -> None:
        self.proxy: SwitchableProxy | None = None
        self.aside = None
        if isinstance(store, LocalBlobStore):
            self.store = store
            return
        self.proxy = SwitchableProxy(settings.S3_ENDPOINT_URL)
        settings.S3_ENDPOINT_URL = self.proxy.url
        settings.S3_CONNECT_TIMEOUT_S = 1.0
        settings.S3_READ_TIMEOUT_S = 1.0
        settings.S3_MAX_ATTEMPTS = 1
        get_blob_store.cache_clear()
        self.store = get_blob_store()

    def begin(self) -> None:
        if self.proxy is not None:
            self.proxy.stall()
            return
        root = self.store.root
        self.aside = root.with_name(root.name + ".aside")
        root.rename(self.aside)
        root.write_bytes(b"")

    def end(self) -> None:
        if self.proxy is not None:
            self.proxy.forward()
            return
        self.store.root.unlink()
        self.aside.rename(self.store.root)

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()


@pytest.fixture
def outage(blob_store, settings):
    outage = StoreOutage(blob_store, settings)
    yield outage
    outage.close()


def test_an_enrollment_whose_clean_up_failed_with_the_store_is_swept_once_it_recovers(
    outage, bystanders, consent_then, settings, caplog
):
    api = client_for(make_key(make_tenant())[1])

    def store_fails_then_the_transaction_dies():
        outage.begin()
        sever(connection.connection.info.backend_pid)

    consent_then(store_fails_then_the_transaction_dies)

    response = api.post(SPEAKERS, enrollment_form(), format="multipart")

    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "database_unavailable"
    connection.close()
    assert Speaker.objects.count() == 1 and ConsentRecord.objects.count() == 1
    assert any("could not remove blob" in r.getMessage() for r in caplog.records)
    orphans = intent_keys(BlobPurpose.ENROLLMENT_REFERENCE, BlobPurpose.ENROLLMENT_CONSENT)
    assert len(orphans) == 2
    age(orphans, settings)

    still_failing = sweep_orphan_blobs()

    assert still_failing.removed == []
    assert sorted(blob["key"] for blob in still_failing.failed) == orphans
    assert intent_keys() == sorted([*orphans, bystanders.young_key])  # kept for the next run
    outage.end()
    assert_stored(outage.store, bystanders, *orphans)

    recovered = sweep_orphan_blobs()

    assert sorted(blob["key"] for blob in recovered.removed) == orphans
    assert recovered.failed == []
    assert_stored(outage.store, bystanders)
    assert intent_keys() == [bystanders.young_key]
    first, second = swept_events()
    assert sorted(blob["key"] for blob in first.details["failed"]) == orphans
    assert first.details["removed"] == []
    assert sorted(blob["key"] for blob in second.details["removed"]) == orphans


# --- diarization: the process died with the upload stored, before its job row ---------------


def crash_an_upload(store, settings, tmp_path, when: str) -> str:
    """Runs an upload in a process of its own that is SIGKILLed ``when``; the key it took."""
    env = node_environment(settings.S3_ENDPOINT_URL, settings.S3_BUCKET)
    if isinstance(store, LocalBlobStore):
        env.update({"BLOB_STORE": "local", "BLOB_LOCAL_DIR": str(store.root)})
    api_key, _ = make_key(make_tenant())
    recording = tmp_path / "meeting.wav"
    recording.write_bytes(audio.encode(audio.sample()))
    crashed = subprocess.run(
        [sys.executable, "-m", "tests.operations.integration.crash_upload"]
        + [str(api_key.id), str(recording), when],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=180,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()[-4000:]
    (key,) = [
        key
        for key in intent_keys(BlobPurpose.DIARIZATION_UPLOAD)
        if key.startswith(f"diarize/{api_key.tenant_id}/")
    ]
    return key


def test_an_upload_whose_process_died_before_its_job_row_is_swept(
    blob_store, bystanders, settings, tmp_path
):
    key = crash_an_upload(blob_store, settings, tmp_path, "after-write")

    assert DiarizationJob.objects.count() == 1  # the bystander's
    assert Counter(stored(blob_store)) == Counter([*bystanders.copies, key])
    age([key], settings)
    report = sweep_orphan_blobs()

    assert [blob["key"] for blob in report.removed] == [key]
    assert report.removed[0]["purpose"] == "diarization.upload"
    assert report.removed[0]["versions"] == 1
    assert_stored(blob_store, bystanders)
    assert intent_keys() == [bystanders.young_key]
    (event,) = swept_events()
    assert [blob["key"] for blob in event.details["removed"]] == [key]


# --- the local store: a write killed mid-way leaves a .partial file -------------------------


@pytest.mark.parametrize("blob_store", ["local"], indirect=True)
def test_a_partial_write_left_by_a_crash_is_swept_once_stale(
    blob_store, bystanders, settings, tmp_path
):
    key = crash_an_upload(blob_store, settings, tmp_path, "mid-write")
    partial = f"{key}.partial"
    assert key not in stored(blob_store) and partial in stored(blob_store)
    # Another write under way: its .partial is young and stays.
    writing = blob_store.root / f"diarize/{bystanders.speaker.tenant_id}/writing/audio.partial"
    writing.parent.mkdir(parents=True)
    writing.write_bytes(b"part of an upload")
    assert sweep_orphan_blobs().partials_removed == []

    stale = time.time() - settings.BLOB_INTENT_GRACE_S - 60
    os.utime(blob_store.root / partial, (stale, stale))
    age([key], settings)
    report = sweep_orphan_blobs()

    assert report.partials_removed == [partial]
    assert report.partials_failed == []
    # Its intent goes too: the blob itself was never written.
    assert report.removed == [
        {"key": key, "purpose": "diarization.upload", "versions": 0, "bytes": 0}
    ]
    relative_writing = writing.relative_to(blob_store.root).as_posix()
    assert_stored(blob_store, bystanders, relative_writing)
    assert intent_keys() == [bystanders.young_key]
    (event,) = swept_events()
    assert event.details["partials_removed"] == [partial]


# --- an old intent whose blob a row owns ---------------------------------------------------


def test_an_old_intent_of_an_owned_recording_is_cleared_and_the_recording_kept(
    blob_store, bystanders, settings
):
    owned = bystanders.speaker.reference_blob_key
    register(owned, BlobPurpose.ENROLLMENT_REFERENCE)
    age([owned], settings)

    report = sweep_orphan_blobs()

    assert report.owned == [owned] and report.removed == [] and report.failed == []
    assert_stored(blob_store, bystanders)
    assert intent_keys() == [bystanders.young_key]
    (event,) = swept_events()
    assert event.details["owned"] == [owned]


# --- the service's database role ----------------------------------------------------------


def test_the_application_role_may_write_and_clear_intents(live_db, application_role):
    with application_role.connect() as app:
        app.execute(
            "INSERT INTO storage_blobintent (key, purpose, created_at) VALUES (%s, %s, now())",
            ["diarize/t/j/audio", "diarization.upload"],
        )
        deleted = app.execute(
            "DELETE FROM storage_blobintent WHERE key = %s", ["diarize/t/j/audio"]
        )
        assert deleted.rowcount == 1
