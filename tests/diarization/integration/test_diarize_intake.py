"""The diarization intake: rate limited per tenant, streamed to the blob store, checked on the
header only; the node decodes, and fails a job whose audio holds more than the limits."""

from __future__ import annotations

import hashlib
import io
import json
import tracemalloc
from types import SimpleNamespace

import pytest

from audit.models import AuditEvent
from common import rate_limits
from common.blobs import BlobStoreError, LocalBlobStore, get_blob_store
from diarization import tasks
from diarization.models import DiarizationJob, JobStatus
from diarization.services import completion, jobs, webhook_delivery
from nodes.runtime import NodeRuntime
from tests import audio
from tests.diarization.audio_files import (
    declaring_total_samples,
    multichannel_flac,
    wav_header,
    with_garbage_frames,
)
from tests.factories import client_for, make_key, make_tenant, upload
from tests.webhooks import WebhookReceiver
from voice.engines import get_engine

DIARIZE = "/v1/modules/scaiecho/diarize"
# 30 s of 16 kHz mono: the pyannote sample fits exactly, 5 s at 384 kHz x 8 channels is 32x it.
SMALL_CAP = 30 * 16_000


def stored_keys(store) -> list[str]:
    listing = store.client.list_object_versions(Bucket=store.bucket)
    return [v["Key"] for v in listing.get("Versions", [])]


def post(api, name: str, data: bytes, **fields):
    return api.post(DIARIZE, {"audio": upload(name, data), **fields}, format="multipart")


@pytest.fixture
def small_cap(settings):
    settings.DIARIZE_MAX_INPUT_SAMPLES = SMALL_CAP


# --- the rate limit ------------------------------------------------------------------------


def test_a_tenant_past_its_rate_limit_gets_429_with_retry_after(
    api, s3_blob_store, settings, monkeypatch, django_capture_on_commit_callbacks
):
    settings.DIARIZE_RATE_LIMIT = 2
    # 20 s into a window: the test cannot straddle two windows, and Retry-After is known.
    monkeypatch.setattr(rate_limits, "time", SimpleNamespace(time=lambda: 1_800_000_000 + 20.0))
    sample = audio.encode(audio.sample())
    with django_capture_on_commit_callbacks(execute=False):
        accepted = [post(api, "m.wav", sample).status_code for _ in range(2)]
        refused = post(api, "m.wav", sample)
        # Counted before the form is read: even a request with no audio is refused as such.
        formless = api.post(DIARIZE, {"num_speakers": 2}, format="multipart")
        other_tenant = post(client_for(make_key(make_tenant())[1]), "m.wav", sample)

    assert accepted == [202, 202]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused["Retry-After"] == "40"
    assert formless.status_code == 429
    assert other_tenant.status_code == 202
    assert DiarizationJob.objects.count() == 3
    assert len(stored_keys(s3_blob_store)) == 3


def test_the_schema_documents_the_intakes_answers(db):
    schema = client_for(None).get("/v1/openapi.json").json()
    answers = schema["paths"][DIARIZE]["post"]["responses"]
    assert "audio_too_costly" in answers["422"]["description"]
    assert "audio_too_costly" in answers["202"]["description"]  # a node-side failure
    assert "Retry-After" in answers["429"]["headers"]


# --- the cost cap at intake (the header) ---------------------------------------------------


def test_a_tiny_384_khz_8_channel_flac_over_the_cap_is_refused_with_nothing_stored(
    api, s3_blob_store, small_cap
):
    flac = multichannel_flac(5.0)
    assert len(flac) < 20_000  # tiny on the wire, 15.36 million samples to decode

    response = post(api, "tiny.flac", flac)

    assert response.status_code == 422, response.content
    error = response.json()["error"]
    assert error["code"] == "audio_unusable"
    assert error["reason"] == "audio_too_costly"
    assert error["measured"] == 5 * 384_000 * 8
    assert error["threshold"] == SMALL_CAP
    assert "0.2 s at this rate and channel count" in error["message"]
    assert not DiarizationJob.objects.exists()
    assert stored_keys(s3_blob_store) == []


def test_under_the_same_cap_30_s_of_16_khz_mono_are_accepted(
    api, s3_blob_store, small_cap, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        response = post(api, "meeting.wav", audio.encode(audio.sample()))
    assert response.status_code == 202, response.content
    assert response.json()["data"]["audio_duration"] == pytest.approx(30.0, abs=0.05)


def test_a_declared_duration_over_the_limit_is_still_refused_at_intake(
    api, s3_blob_store, settings
):
    settings.DIARIZE_MAX_DURATION_S = 4.0
    response = post(api, "tiny.flac", multichannel_flac(5.0, rate=16_000, layout="mono"))
    assert response.status_code == 422
    assert response.json()["error"]["reason"] == "audio_too_long"
    assert stored_keys(s3_blob_store) == []


# --- the node: what the header did not say --------------------------------------------------


@pytest.fixture
def runtime() -> NodeRuntime:
    return NodeRuntime("node-here", get_engine())


@pytest.fixture
def on_this_node(runtime, monkeypatch):
    """The node task run here, in this process; the orchestrator's fallback must not be used."""

    def handed_over(job_id: str, attempt: int) -> None:
        raise AssertionError("audio no node can use was handed to the orchestrator")

    monkeypatch.setattr(tasks, "current_node", lambda: runtime)
    monkeypatch.setattr(jobs, "hand_to_orchestrator", handed_over)

    def run(job_id: str) -> str:
        return tasks.run_job.apply(args=[job_id, 1]).get()

    return run


@pytest.fixture
def receiver(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = True
    hook = WebhookReceiver([200])
    yield hook
    hook.close()


def test_a_lying_header_passes_intake_and_the_node_fails_the_job_as_too_costly(
    api,
    s3_blob_store,
    small_cap,
    on_this_node,
    receiver,
    monkeypatch,
    django_capture_on_commit_callbacks,
):
    # Declares 0.05 s (153,600 samples, under the cap) and holds 5 s (15.36 million).
    liar = declaring_total_samples(multichannel_flac(5.0), total=19_200)
    with django_capture_on_commit_callbacks(execute=False):
        submitted = post(api, "liar.flac", liar, webhook=receiver.url)
    assert submitted.status_code == 202, submitted.content
    job_id = submitted.json()["data"]["id"]
    assert submitted.json()["data"]["audio_duration"] == pytest.approx(0.05)

    queued: list[str] = []
    monkeypatch.setattr(webhook_delivery, "queue_webhook", queued.append)
    with django_capture_on_commit_callbacks(execute=True):
        assert on_this_node(job_id) == "failed"

    body = api.get(f"{DIARIZE}/{job_id}").json()["data"]
    assert body["status"] == "failed"
    assert body["error"]["code"] == "audio_too_costly"
    assert f"at most {SMALL_CAP} are accepted" in body["error"]["message"]
    assert "result" not in body
    event = AuditEvent.objects.get(action="diarization.failed")
    assert event.actor == "node:node-here"
    assert event.details["error"]["code"] == "audio_too_costly"
    # Finished: its audio is deleted and its webhook says why.
    assert stored_keys(s3_blob_store) == []
    assert queued == [job_id]
    assert webhook_delivery.deliver_webhook(job_id) == "delivered"
    delivered = json.loads(receiver.received[-1][1])
    assert delivered["status"] == "failed"
    assert delivered["error"]["code"] == "audio_too_costly"
    # A second delivery of the attempt does nothing: no retry loop.
    assert on_this_node(job_id) == "skipped"


def test_audio_that_does_not_decode_behind_a_valid_header_fails_the_job_on_the_node(
    api, s3_blob_store, on_this_node, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        submitted = post(api, "broken.flac", with_garbage_frames(multichannel_flac(1.0)))
    assert submitted.status_code == 202, submitted.content
    job_id = submitted.json()["data"]["id"]

    with django_capture_on_commit_callbacks(execute=False):
        assert on_this_node(job_id) == "failed"

    job = DiarizationJob.objects.get(id=job_id)
    assert job.status == JobStatus.FAILED
    assert job.error["code"] == "audio_undecodable"


def test_with_no_declared_duration_the_estimate_is_for_the_longest_accepted_until_measured(
    api, s3_blob_store, settings, runtime, django_capture_on_commit_callbacks
):
    settings.DIARIZE_ESTIMATED_RTF = 0.05
    unknown = declaring_total_samples(multichannel_flac(5.0), total=0)
    with django_capture_on_commit_callbacks(execute=False):
        submitted = post(api, "stream.flac", unknown)
    assert submitted.status_code == 202, submitted.content
    accepted = submitted.json()["data"]
    longest_s = settings.DIARIZE_MAX_INPUT_SAMPLES / (384_000 * 8)  # 450 s by default
    assert accepted["audio_duration"] == 0.0
    assert accepted["estimated_time"] == round(longest_s * 0.05 + 1)

    decoded = completion.load_audio(DiarizationJob.objects.get(id=accepted["id"]))

    assert decoded.duration_s == pytest.approx(5.0, abs=0.01)
    measured = api.get(f"{DIARIZE}/{accepted['id']}").json()["data"]
    assert measured["audio_duration"] == pytest.approx(5.0, abs=0.01)
    assert measured["estimated_time"] == 1


# --- the upload is streamed, never held in memory -------------------------------------------


def test_a_large_upload_goes_to_the_store_without_being_held_in_memory(
    api, settings, tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    settings.BLOB_STORE = "local"
    settings.BLOB_LOCAL_DIR = str(tmp_path / "blobs")
    get_blob_store.cache_clear()
    size = 40 * 1024 * 1024
    recording = wav_header(size) + bytes(range(256)) * (size // 256)
    peaks: list[int] = []
    submit_job = jobs.submit_job

    def measured(*args, **kwargs):
        tracemalloc.start()
        try:
            return submit_job(*args, **kwargs)
        finally:
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()

    monkeypatch.setattr(jobs, "submit_job", measured)
    with django_capture_on_commit_callbacks(execute=False):
        response = post(api, "long.wav", recording)

    assert response.status_code == 202, response.content
    assert peaks and peaks[0] < 8 * 1024 * 1024, f"{peaks[0]} bytes at peak"
    job = DiarizationJob.objects.get(id=response.json()["data"]["id"])
    assert job.audio_size_bytes == len(recording)
    assert job.audio_sha256 == hashlib.sha256(recording).hexdigest()
    assert job.audio_duration_s == pytest.approx(size / 32_000)


# --- the streamed put on both stores ---------------------------------------------------------


PART = 5 * 1024 * 1024  # S3's smallest part but the last


def recording_of(size: int) -> bytes:
    return (hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1))[:size]


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, s3_blob_store, monkeypatch):
    if request.param == "local":
        store = LocalBlobStore(tmp_path)
        monkeypatch.setattr(store, "chunk_bytes", 64 * 1024)
        return store
    monkeypatch.setattr(s3_blob_store, "part_bytes", PART)
    return s3_blob_store


@pytest.mark.parametrize("size", [0, 1000, PART, 2 * PART + 7])
def test_both_stores_stream_a_file_and_report_its_sha256_and_size(store, size):
    data = recording_of(size)
    stored = store.put_file("diarize/t/j/audio", io.BytesIO(data))
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.size_bytes == size
    assert store.get("diarize/t/j/audio") == data


def test_an_s3_part_that_fails_aborts_the_upload_and_leaves_nothing(s3_blob_store, monkeypatch):
    from botocore.exceptions import ClientError

    monkeypatch.setattr(s3_blob_store, "part_bytes", PART)
    upload_part = s3_blob_store.client.upload_part
    calls = []

    def failing_second_part(**kwargs):
        calls.append(kwargs["PartNumber"])
        if kwargs["PartNumber"] == 2:
            raise ClientError({"Error": {"Code": "InternalError"}}, "UploadPart")
        return upload_part(**kwargs)

    monkeypatch.setattr(s3_blob_store.client, "upload_part", failing_second_part)
    with pytest.raises(BlobStoreError):
        s3_blob_store.put_file("diarize/t/j/audio", io.BytesIO(recording_of(3 * PART)))
    assert calls == [1, 2]
    client, bucket = s3_blob_store.client, s3_blob_store.bucket
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert stored_keys(s3_blob_store) == []


class BreaksAfter(io.BytesIO):
    """A source whose disk fails after its first chunk."""

    def read(self, size: int | None = -1) -> bytes:
        if self.tell() > 0:
            raise OSError("input/output error")
        return super().read(size)


def test_a_local_write_that_fails_leaves_no_partial_copy(tmp_path):
    store = LocalBlobStore(tmp_path)
    with pytest.raises(BlobStoreError):
        store.put_file("diarize/t/j/audio", BreaksAfter(recording_of(3 * 1024 * 1024)))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
