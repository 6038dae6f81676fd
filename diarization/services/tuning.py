"""The service's side of a diarization: thresholds, engine settings, estimates and limits."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django.conf import settings

from common.uploads import MULTIPART_OVERHEAD_BYTES
from diarization.engine import DiarizationOptions
from diarization.models import DiarizationJob
from diarization.scoring import ScoringRules
from tenancy.models import Tenant


def identification_threshold(tenant: Tenant, requested: float | None) -> float:
    if requested is not None:
        return requested
    if tenant.identification_threshold is not None:
        return tenant.identification_threshold
    return float(settings.DIARIZE_IDENTIFICATION_THRESHOLD)


def service_tuning() -> dict[str, Any]:
    """The engine's settings that are the service's, not the request's."""
    return {
        "min_label_s": settings.DIARIZE_MIN_LABEL_S,
        "affinity_pruning": settings.DIARIZE_AFFINITY_PRUNING,
        "merge_threshold": settings.DIARIZE_MERGE_THRESHOLD,
        "split_threshold": settings.DIARIZE_SPLIT_THRESHOLD,
        "shared_match_margin": settings.DIARIZE_SHARED_MATCH_MARGIN,
        **asdict(scoring_rules()),
    }


def scoring_rules() -> ScoringRules:
    """The rules a turn's own evidence is judged by, in batch and streaming alike."""
    return ScoringRules(
        turn_threshold=settings.DIARIZE_TURN_THRESHOLD,
        enrolled_margin=settings.DIARIZE_ENROLLED_MARGIN,
        unenrolled_margin=settings.DIARIZE_UNENROLLED_MARGIN,
        change_penalty=settings.DIARIZE_CHANGE_PENALTY,
        new_voice_score=settings.DIARIZE_NEW_VOICE_SCORE,
    )


def options_for(job: DiarizationJob) -> DiarizationOptions:
    return DiarizationOptions(**job.options, **service_tuning())


def estimated_time_s(duration_s: float) -> int:
    return max(1, int(round(duration_s * settings.DIARIZE_ESTIMATED_RTF + 1.0)))


def longest_accepted_s(sample_rate: int, channels: int) -> float:
    """The longest recording the limits let through at this rate and channel count."""
    by_cost = settings.DIARIZE_MAX_INPUT_SAMPLES / (sample_rate * channels)
    return min(float(settings.DIARIZE_MAX_DURATION_S), by_cost)


def diarize_body_limit() -> int:
    """The largest diarization request: the audio at its limit, plus the form."""
    return settings.DIARIZE_MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES
