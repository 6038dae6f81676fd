"""How the orphan sweeper runs: the beat, the task, the operator's command, its bounds."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from audit.models import AuditEvent
from operations import blob_sweeper
from operations.tasks import sweep_orphan_blobs
from storage.models import BlobIntent, BlobPurpose
from storage.services import register


def orphan(store, key: str, settings, versions: int = 1) -> None:
    """A blob registered and written, whose owner never committed, its intent past the grace."""
    register(key, BlobPurpose.DIARIZATION_UPLOAD)
    for version in range(versions):
        store.put(key, f"version {version}".encode())
    BlobIntent.objects.filter(key=key).update(
        created_at=timezone.now() - timedelta(seconds=settings.BLOB_INTENT_GRACE_S + 60)
    )


def versions_of(store, key: str) -> list[str]:
    listing = store.client.list_object_versions(Bucket=store.bucket, Prefix=key)
    entries = listing.get("Versions", []) + listing.get("DeleteMarkers", [])
    return [entry["VersionId"] for entry in entries if entry["Key"] == key]


def test_the_beat_sweeps_on_the_orchestrator(settings):
    assert settings.CELERY_BEAT_SCHEDULE["sweep-orphan-blobs"] == {
        "task": "operations.tasks.sweep_orphan_blobs",
        "schedule": settings.BLOB_SWEEP_INTERVAL_S,
    }
    assert settings.CELERY_TASK_ROUTES["operations.tasks.sweep_orphan_blobs"] == {
        "queue": "orchestrator"
    }


def test_every_version_and_delete_marker_of_an_orphan_goes(db, s3_blob_store, settings):
    orphan(s3_blob_store, "diarize/t/j/audio", settings, versions=2)
    s3_blob_store.client.delete_object(Bucket=s3_blob_store.bucket, Key="diarize/t/j/audio")
    assert len(versions_of(s3_blob_store, "diarize/t/j/audio")) == 3

    assert sweep_orphan_blobs.apply().get() == 1

    assert versions_of(s3_blob_store, "diarize/t/j/audio") == []
    assert not BlobIntent.objects.exists()
    event = AuditEvent.objects.get(action="storage.orphans_swept")
    assert event.details["removed"] == [
        {"key": "diarize/t/j/audio", "purpose": "diarization.upload", "versions": 3, "bytes": 18}
    ]


def test_a_run_with_nothing_to_sweep_writes_no_event(db, s3_blob_store):
    register("diarize/t/young/audio", BlobPurpose.DIARIZATION_UPLOAD)
    s3_blob_store.put("diarize/t/young/audio", b"under way")

    assert sweep_orphan_blobs.apply().get() == 0

    assert versions_of(s3_blob_store, "diarize/t/young/audio")
    assert not AuditEvent.objects.filter(action="storage.orphans_swept").exists()


def test_a_run_out_of_time_leaves_the_rest_for_the_next(db, s3_blob_store, settings, monkeypatch):
    orphan(s3_blob_store, "diarize/t/a/audio", settings)
    monkeypatch.setattr(blob_sweeper, "SWEEP_TIME_BUDGET_S", -1.0)

    assert blob_sweeper.sweep_orphan_blobs().removed == []
    assert BlobIntent.objects.filter(key="diarize/t/a/audio").exists()
    monkeypatch.undo()
    assert [blob["key"] for blob in blob_sweeper.sweep_orphan_blobs().removed] == [
        "diarize/t/a/audio"
    ]


def test_the_command_sweeps_once_and_prints_what_it_removed(db, s3_blob_store, settings):
    orphan(s3_blob_store, "diarize/t/a/audio", settings)
    out = io.StringIO()

    call_command("sweep_orphan_blobs", stdout=out)

    printed = out.getvalue()
    assert "removed diarize/t/a/audio (diarization.upload, 1 versions, 9 bytes)" in printed
    assert "1 orphan blobs and 0 partial writes removed, 0 failed" in printed
    assert versions_of(s3_blob_store, "diarize/t/a/audio") == []


def test_the_command_fails_when_an_orphan_cannot_be_removed(
    db, s3_blob_store, settings, monkeypatch
):
    from common.blobs import BlobStoreError

    orphan(s3_blob_store, "diarize/t/a/audio", settings)

    def refuse(key):
        raise BlobStoreError(f"cannot delete blob {key}: AccessDenied")

    monkeypatch.setattr(s3_blob_store, "delete_all_versions", refuse)
    out, err = io.StringIO(), io.StringIO()

    with pytest.raises(CommandError, match="next run"):
        call_command("sweep_orphan_blobs", stdout=out, stderr=err)

    assert "could not remove diarize/t/a/audio: cannot delete blob" in err.getvalue()
    assert BlobIntent.objects.filter(key="diarize/t/a/audio").exists()
    event = AuditEvent.objects.get(action="storage.orphans_swept")
    assert event.details["failed"][0]["key"] == "diarize/t/a/audio"
