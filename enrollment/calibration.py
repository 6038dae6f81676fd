"""Calibrating the consent check on an operator's own recordings and embedding model.

A directory holds one folder per speaker, each with that speaker's recordings. Every
ordered pair of two different recordings is scored as the preflight scores a reference
against a consent recording (same decoding, voice activity and ``voice_match_score``):
pairs of one speaker are genuine, pairs of two speakers impostor. The report gives the
consent check's error rates at the configured thresholds and the thresholds that reach
a target false-accept rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings

from common.audio import AudioRejected, decode_audio
from voice.engines import EmbeddingEngine
from voice.scoring import VoiceSample, voice_match_score, voice_sample
from voice.vad import SileroVad, speech_only


class CalibrationError(Exception):
    """The recordings cannot be used for calibration; the message says which and why."""


@dataclass(frozen=True)
class PairScores:
    genuine: np.ndarray
    impostor: np.ndarray


@dataclass(frozen=True)
class CheckRates:
    """The consent check's outcomes over scored pairs at one pair of thresholds."""

    reject_below: float
    review_below: float
    genuine: int
    impostor: int
    false_accepts: int  # impostor passes without review
    false_rejects: int  # genuine held for review or refused
    genuine_refused: int
    genuine_reviewed: int
    impostor_reviewed: int

    @property
    def false_accept_rate(self) -> float:
        return self.false_accepts / self.impostor

    @property
    def false_reject_rate(self) -> float:
        return self.false_rejects / self.genuine


@dataclass(frozen=True)
class CalibrationReport:
    model_id: str
    speakers: dict[str, int]  # recordings per speaker
    scores: PairScores
    current: CheckRates
    suggested: CheckRates
    target_far: float


def load_speakers(
    directory: Path, engine: EmbeddingEngine, vad: SileroVad
) -> dict[str, list[VoiceSample]]:
    if not directory.is_dir():
        raise CalibrationError(f"{directory} is not a directory.")
    folders = sorted(d for d in directory.iterdir() if d.is_dir() and not d.name.startswith("."))
    speakers = {}
    for folder in folders:
        files = sorted(f for f in folder.rglob("*") if f.is_file() and not f.name.startswith("."))
        if files:
            speakers[folder.name] = [_recording(path, engine, vad) for path in files]
    if not speakers:
        raise CalibrationError(
            f"{directory} holds no speaker folders with recordings: put each speaker's "
            "recordings in a folder of their own."
        )
    if len(speakers) < 2:
        raise CalibrationError(
            f"{directory} holds one speaker ({next(iter(speakers))}); impostor pairs need at "
            "least two."
        )
    if all(len(recordings) < 2 for recordings in speakers.values()):
        raise CalibrationError("Every speaker has one recording; genuine pairs need two.")
    return speakers


def _recording(path: Path, engine: EmbeddingEngine, vad: SileroVad) -> VoiceSample:
    try:
        with path.open("rb") as source:
            decoded = decode_audio(source, max_duration_s=settings.ENROLLMENT_MAX_DURATION_S)
    except AudioRejected as rejected:
        raise CalibrationError(f"{path}: {rejected.message}") from rejected
    speech = speech_only(decoded.samples, vad.speech_regions(decoded.samples))
    if speech.size < settings.PREFLIGHT_MIN_CONSENT_SPEECH_S * decoded.sample_rate:
        raise CalibrationError(f"{path}: no audible speech to compare.")
    sample = voice_sample(engine, speech)
    # The preflight refuses such a recording (voiceprint_unavailable); it has no score.
    if not np.isfinite(sample.windows).all():
        raise CalibrationError(f"{path}: the embedding model returned no usable voiceprint.")
    return sample


def pair_scores(engine: EmbeddingEngine, speakers: dict[str, list[VoiceSample]]) -> PairScores:
    genuine: list[float] = []
    impostor: list[float] = []
    labelled = [(name, sample) for name, samples in speakers.items() for sample in samples]
    for i, (reference_speaker, reference) in enumerate(labelled):
        for j, (consent_speaker, consent) in enumerate(labelled):
            if i == j:
                continue
            score = voice_match_score(engine, reference, consent)
            (genuine if reference_speaker == consent_speaker else impostor).append(score)
    return PairScores(np.asarray(genuine), np.asarray(impostor))


def rates_at(scores: PairScores, reject_below: float, review_below: float) -> CheckRates:
    genuine, impostor = scores.genuine, scores.impostor
    return CheckRates(
        reject_below=reject_below,
        review_below=review_below,
        genuine=genuine.size,
        impostor=impostor.size,
        false_accepts=int((impostor >= review_below).sum()),
        false_rejects=int((genuine < review_below).sum()),
        genuine_refused=int((genuine < reject_below).sum()),
        genuine_reviewed=int(((genuine >= reject_below) & (genuine < review_below)).sum()),
        impostor_reviewed=int(((impostor >= reject_below) & (impostor < review_below)).sum()),
    )


def thresholds_for(scores: PairScores, target_far: float) -> tuple[float, float]:
    """(reject below, review below): review below the lowest threshold, to 0.001, that lets
    at most ``target_far`` of the impostor pairs pass; refuse below the lowest genuine score
    (no genuine pair refused), never above the review threshold."""
    ranked = np.sort(scores.impostor)[::-1]
    first_held = ranked[math.floor(target_far * ranked.size)]  # target_far < 1
    # The next 0.001 strictly above it (the epsilon absorbs 0.64 * 1000 = 639.999...).
    review_below = (math.floor(float(first_held) * 1000 + 1e-6) + 1) / 1000
    reject_below = min(math.floor(float(scores.genuine.min()) * 1000) / 1000, review_below)
    return reject_below, review_below


def calibrate(
    directory: Path, engine: EmbeddingEngine, vad: SileroVad, target_far: float
) -> CalibrationReport:
    if not 0.0 <= target_far < 1.0:
        raise CalibrationError(f"The target false-accept rate must be in [0, 1); got {target_far}.")
    speakers = load_speakers(directory, engine, vad)
    scores = pair_scores(engine, speakers)
    current = rates_at(
        scores, settings.PREFLIGHT_CONSENT_MATCH_THRESHOLD, settings.PREFLIGHT_CONSENT_MATCH_WARN
    )
    suggested = rates_at(scores, *thresholds_for(scores, target_far))
    return CalibrationReport(
        model_id=engine.model_id,
        speakers={name: len(samples) for name, samples in speakers.items()},
        scores=scores,
        current=current,
        suggested=suggested,
        target_far=target_far,
    )
