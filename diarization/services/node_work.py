"""A batch job run on a node: diarized, labelled from the node's gallery, written once."""

from __future__ import annotations

from django.utils import timezone

from diarization.engine import as_result, diarize
from diarization.models import DiarizationJob, JobStatus
from diarization.segmentation import get_speech_detector
from diarization.services import completion, tuning
from diarization.services.completion import UNFINISHED, NodeJobError
from enrollment.models import EnrollmentStatus, Speaker
from nodes.runtime import NodeRuntime
from nodes.services.node_work import evict_here
from voice.gallery import EnrolledGallery


def run_job_here(runtime: NodeRuntime, job_id: str, attempt: int) -> str:
    """Diarizes the job's audio on this node, labelled from this node's gallery.

    Idempotent: a redelivered or superseded attempt does nothing. Audio that cannot be
    used fails the job ("failed"), which no task retries.
    """
    started = DiarizationJob.objects.filter(
        id=job_id, attempt=attempt, status__in=UNFINISHED
    ).update(status=JobStatus.RUNNING, started_at=timezone.now())
    if not started:
        return "skipped"
    job = DiarizationJob.objects.select_related("tenant").get(id=job_id)
    try:
        audio = completion.load_audio(job)
    except NodeJobError as exc:
        if not exc.permanent:
            raise  # the task retries a blob store outage
        # Audio no node can use (it does not decode, or holds more than the limits): failed
        # here, with the reason, rather than decoded again by the orchestrator's fallback.
        completion.fail(job, attempt, exc.code, exc.message, actor=runtime.node_id)
        return "failed"
    options = tuning.options_for(job)
    detector = get_speech_detector()
    heard = detector.detect(audio.samples)
    gallery = _gallery_for(runtime, str(job.tenant_id))
    result = diarize(
        audio.samples,
        heard.speech,
        runtime.engine,
        gallery,
        options,
        overlap=heard.overlap,
        chunks=heard.chunks,
    )
    # The node's gallery may still hold a speaker erased a moment ago: check the matches
    # against the tombstones, evict the erased ones, and match again without every speaker
    # that is not ready. (completion.complete checks once more, under the speakers' row locks.)
    excluded: set[str] = set()
    while not_ready := _not_ready(result.labelled_speaker_ids(options.min_label_s)):
        for speaker_id in _erased(not_ready):
            evict_here(runtime, speaker_id)
        excluded.update(not_ready)
        result.identify(_gallery_for(runtime, str(job.tenant_id)).without(excluded), options)
    matched = result.labelled_speaker_ids(options.min_label_s)
    body = as_result(
        result,
        options,
        extra={
            "node_id": runtime.node_id,
            "model": {
                "embedding_model_id": runtime.engine.model_id,
                "embedding_model_version": runtime.engine.model_version,
                "voice_activity": detector.model_id,
                "gallery_size": len(gallery),
            },
        },
    )
    completion.complete(job, attempt, body, matched=matched, actor=runtime.node_id)
    return "succeeded"


def _gallery_for(runtime: NodeRuntime, tenant_id: str) -> EnrolledGallery:
    return runtime.gallery.matrix_for(tenant_id, runtime.engine.model_id)


def _not_ready(speaker_ids: list[str]) -> set[str]:
    if not speaker_ids:
        return set()
    ready = Speaker.objects.filter(id__in=speaker_ids, enrollment_status=EnrollmentStatus.READY)
    return set(speaker_ids) - {str(s) for s in ready.values_list("id", flat=True)}


def _erased(speaker_ids: set[str]) -> set[str]:
    """Of these, the erased ones (tombstoned, or gone): a node must not keep holding them."""
    kept = Speaker.objects.filter(id__in=speaker_ids).exclude(
        enrollment_status=EnrollmentStatus.EVICTED
    )
    return speaker_ids - {str(s) for s in kept.values_list("id", flat=True)}
