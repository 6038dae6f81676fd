"""Quality preflight for an enrollment: decode, voice activity, signal quality, voices.

Every finding has a machine-readable code, a severity (``error`` rejects the
enrollment, ``review`` holds it for a person's decision, ``warning`` does neither), the
recording it is about, the measured value and the threshold it was compared with. An
uncertain voice check (consent match, second voice, duplicate voice) takes its severity from
its policy setting. The preflight reads and measures; it writes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

import numpy as np
from django.conf import settings

from common.audio import AudioRejected, DecodedAudio, decode_audio
from voice.engines import VOICEPRINT_HOP_S, EmbeddingEngine, get_engine
from voice.scoring import VoiceSample, effective_bandwidth_hz, voice_match_score
from voice.vad import SpeechRegion, get_vad, speech_only

ERROR = "error"
REVIEW = "review"
WARNING = "warning"
# What each policy (settings.PREFLIGHT_POLICIES) makes of an uncertain voice check.
POLICY_SEVERITY = {"reject": ERROR, "review": REVIEW, "warn": WARNING}
REFERENCE = "reference"
CONSENT = "consent"

SNR_FRAME = 320  # 20 ms at 16 kHz
SNR_CEILING_DB = 99.0


@dataclass(frozen=True)
class PreflightFinding:
    code: str
    severity: str
    recording: str
    message: str
    measured: float | None = None
    threshold: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "recording": self.recording,
            "message": self.message,
            "measured": self.measured,
            "threshold": self.threshold,
            **self.extra,
        }


@dataclass
class RecordingAnalysis:
    role: str
    audio: DecodedAudio | None = None
    speech_regions: list[SpeechRegion] = field(default_factory=list)
    speech_s: float = 0.0
    snr_db: float | None = None
    voiceprint: np.ndarray | None = None
    voice: VoiceSample | None = None

    def summary(self) -> dict[str, Any]:
        if self.audio is None:
            return {"decoded": False}
        return {
            "decoded": True,
            "format": self.audio.format,
            "codec": self.audio.codec,
            "sample_rate_hz": self.audio.original_sample_rate,
            "channels": self.audio.channels,
            "duration_s": round(self.audio.duration_s, 3),
            "speech_s": round(self.speech_s, 3),
            "snr_db": None if self.snr_db is None else round(self.snr_db, 1),
            "clipped_fraction": round(self.audio.clipped_fraction, 5),
            # Where the speech's spectrum ends: under 4 kHz is telephone-band audio.
            "bandwidth_hz": None if self.voice is None else round(self.voice.bandwidth_hz),
        }


class KnownVoiceprints(Protocol):
    """The tenant's enrolled voiceprints the duplicate check compares with."""

    def best_match(self, vector: np.ndarray) -> tuple[str, float] | None:
        """The closest speaker's id and cosine score; None when there is none."""
        ...


@dataclass
class PreflightReport:
    reference: RecordingAnalysis
    consent: RecordingAnalysis
    findings: list[PreflightFinding]
    model_id: str
    model_version: str
    consent_match_score: float | None = None
    second_voice_score: float | None = None
    duplicate_of: str | None = None
    duplicate_score: float | None = None
    processing_s: float = 0.0

    @property
    def passed(self) -> bool:
        return not any(f.severity == ERROR for f in self.findings)

    @property
    def needs_review(self) -> bool:
        return self.passed and any(f.severity == REVIEW for f in self.findings)

    def held_findings(self) -> list[PreflightFinding]:
        return [f for f in self.findings if f.severity == REVIEW]

    @property
    def audio_s(self) -> float:
        return sum(r.audio.duration_s for r in (self.reference, self.consent) if r.audio)

    def quality_grade(self) -> str:
        speech = self.reference.speech_s
        if speech < settings.PREFLIGHT_MIN_REFERENCE_SPEECH_S:
            return "insufficient"
        if speech >= settings.PREFLIGHT_RECOMMENDED_SPEECH_S:
            return "strong"
        return "good" if speech >= 12.0 else "fair"

    def to_dict(self) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {
            "passed": self.passed,
            "needs_review": self.needs_review,
            "quality_grade": self.quality_grade(),
            "recommended_additional_speech_s": round(
                max(0.0, settings.PREFLIGHT_RECOMMENDED_SPEECH_S - self.reference.speech_s), 1
            ),
            "reference": self.reference.summary(),
            "consent": self.consent.summary(),
            "consent_match_score": rounded(self.consent_match_score),
            "second_voice_score": rounded(self.second_voice_score),
            "duplicate_of": self.duplicate_of,
            "duplicate_score": rounded(self.duplicate_score),
            "embedding_model": {"id": self.model_id, "version": self.model_version},
            "processing_s": round(self.processing_s, 4),
            "real_time_factor": round(self.processing_s / self.audio_s, 4)
            if self.audio_s
            else None,
            "findings": [f.to_dict() for f in self.findings],
        }


def estimate_snr_db(samples: np.ndarray, regions: Sequence[SpeechRegion]) -> float | None:
    """Speech power over the noise floor, in dB.

    The noise floor is the 10th percentile of 20 ms frame energies: every frame
    holds the background noise, and pauses between words and sentences are the
    quietest frames. Densely spoken recordings without pauses read a little
    noisier than they are, which errs on the safe side.
    """
    frames = samples.size // SNR_FRAME
    if frames == 0 or not regions:
        return None
    energy = np.square(samples[: frames * SNR_FRAME].reshape(frames, SNR_FRAME)).mean(axis=1)
    centres = np.arange(frames) * SNR_FRAME + SNR_FRAME // 2
    is_speech = np.zeros(frames, dtype=bool)
    for region in regions:
        is_speech |= (centres >= region.start) & (centres < region.end)
    if not is_speech.any():
        return None
    signal = float(energy[is_speech].mean())
    noise = float(np.percentile(energy, 10))
    if noise <= 1e-10:
        return SNR_CEILING_DB
    return float(np.clip(10 * np.log10(max(signal - noise, 1e-10) / noise), -50.0, SNR_CEILING_DB))


def _two_voice_split(windows: np.ndarray) -> tuple[float, int]:
    """Split window embeddings into two groups and compare the groups.

    The first split follows the principal axis of the embeddings (for two
    voices, the axis between them), then spherical 2-means refines it. Returns
    the cosine similarity of the two group centroids and the size of the
    smaller group: one voice gives near-identical centroids.
    """
    centred = windows - windows.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    labels = (centred @ axes[0] > 0).astype(int)
    centroids = np.stack([windows.mean(axis=0)] * 2)
    for _ in range(20):
        centroids = np.stack(
            [
                windows[labels == k].mean(axis=0) if (labels == k).any() else centroids[k]
                for k in (0, 1)
            ]
        )
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        updated = np.argmax(windows @ centroids.T, axis=1)
        if np.array_equal(updated, labels):
            break
        labels = updated
    return float(centroids[0] @ centroids[1]), int(min(np.bincount(labels, minlength=2)))


class Preflight:
    def __init__(self, engine: EmbeddingEngine | None = None):
        self.engine = engine or get_engine()
        self.vad = get_vad()
        self.findings: list[PreflightFinding] = []

    def add(
        self,
        code: str,
        severity: str,
        recording: str,
        message: str,
        *,
        measured: float | None = None,
        threshold: float | None = None,
        **extra: Any,
    ) -> None:
        self.findings.append(
            PreflightFinding(code, severity, recording, message, measured, threshold, extra)
        )

    def run(
        self,
        reference: BinaryIO,
        consent: BinaryIO,
        known_voiceprints: KnownVoiceprints | None = None,
    ) -> PreflightReport:
        started = time.perf_counter()
        ref = self._analyse(REFERENCE, reference, settings.PREFLIGHT_MIN_REFERENCE_SPEECH_S)
        con = self._analyse(CONSENT, consent, settings.PREFLIGHT_MIN_CONSENT_SPEECH_S)
        report = PreflightReport(
            reference=ref,
            consent=con,
            findings=self.findings,
            model_id=self.engine.model_id,
            model_version=self.engine.model_version,
        )
        if ref.speech_s >= settings.PREFLIGHT_MIN_REFERENCE_SPEECH_S and ref.audio is not None:
            self._voiceprint_reference(ref, report)
        if ref.voiceprint is not None:
            if con.speech_s >= settings.PREFLIGHT_MIN_CONSENT_SPEECH_S and con.audio is not None:
                self._match_consent(ref, con, report)
            self._find_duplicate(ref, report, known_voiceprints)
        report.processing_s = time.perf_counter() - started
        return report

    def _analyse(self, role: str, source: BinaryIO, min_speech_s: float) -> RecordingAnalysis:
        analysis = RecordingAnalysis(role)
        try:
            analysis.audio = decode_audio(source, max_duration_s=settings.ENROLLMENT_MAX_DURATION_S)
        except AudioRejected as rejected:
            self.add(
                rejected.code,
                ERROR,
                role,
                rejected.message,
                measured=rejected.measured,
                threshold=rejected.threshold,
            )
            return analysis
        audio = analysis.audio

        if audio.original_sample_rate < settings.PREFLIGHT_MIN_SAMPLE_RATE:
            self.add(
                "sample_rate_too_low",
                ERROR,
                role,
                f"The {role} recording is sampled at {audio.original_sample_rate} Hz; "
                f"at least {settings.PREFLIGHT_MIN_SAMPLE_RATE} Hz is needed.",
                measured=audio.original_sample_rate,
                threshold=settings.PREFLIGHT_MIN_SAMPLE_RATE,
            )

        analysis.speech_regions = self.vad.speech_regions(audio.samples)
        analysis.speech_s = sum(r.duration_s for r in analysis.speech_regions)
        if role == CONSENT and analysis.speech_s < min_speech_s:
            self.add(
                "consent_no_speech",
                ERROR,
                role,
                "The consent recording has no audible speech: the speaker must read the "
                "consent text aloud.",
                measured=round(analysis.speech_s, 3),
                threshold=min_speech_s,
            )
        elif role == REFERENCE and analysis.speech_s < min_speech_s:
            self.add(
                "too_little_speech",
                ERROR,
                role,
                f"The reference has {analysis.speech_s:.1f} s of speech; at least "
                f"{min_speech_s:.0f} s is needed.",
                measured=round(analysis.speech_s, 3),
                threshold=min_speech_s,
            )
        elif role == REFERENCE and analysis.speech_s < settings.PREFLIGHT_RECOMMENDED_SPEECH_S:
            more = settings.PREFLIGHT_RECOMMENDED_SPEECH_S - analysis.speech_s
            self.add(
                "more_speech_recommended",
                WARNING,
                role,
                f"{analysis.speech_s:.1f} s of speech is enough to enroll; about {more:.0f} s "
                "more would make a stronger voiceprint.",
                measured=round(analysis.speech_s, 3),
                threshold=settings.PREFLIGHT_RECOMMENDED_SPEECH_S,
            )

        self._check_clipping(role, audio)
        analysis.snr_db = estimate_snr_db(audio.samples, analysis.speech_regions)
        self._check_snr(role, analysis.snr_db)
        return analysis

    def _check_clipping(self, role: str, audio: DecodedAudio) -> None:
        limit = settings.PREFLIGHT_MAX_CLIPPED_FRACTION
        measured = round(audio.clipped_fraction, 5)
        if audio.clipped_fraction > limit:
            self.add(
                "clipping",
                ERROR,
                role,
                f"{audio.clipped_fraction:.1%} of the {role} recording's samples are clipped "
                "(recorded too loud); record again with lower input gain.",
                measured=measured,
                threshold=limit,
            )
        elif audio.clipped_fraction > limit / 10:
            self.add(
                "clipping",
                WARNING,
                role,
                f"Some of the {role} recording is clipped ({audio.clipped_fraction:.2%}).",
                measured=measured,
                threshold=limit / 10,
            )

    def _check_snr(self, role: str, snr_db: float | None) -> None:
        if snr_db is None:
            return
        if snr_db < settings.PREFLIGHT_MIN_SNR_DB:
            self.add(
                "low_snr",
                ERROR,
                role,
                f"The {role} recording is too noisy: speech is {snr_db:.1f} dB above the "
                f"background, at least {settings.PREFLIGHT_MIN_SNR_DB:.0f} dB is needed.",
                measured=round(snr_db, 1),
                threshold=settings.PREFLIGHT_MIN_SNR_DB,
            )
        elif snr_db < settings.PREFLIGHT_WARN_SNR_DB:
            self.add(
                "low_snr",
                WARNING,
                role,
                f"The {role} recording has audible background noise ({snr_db:.1f} dB SNR).",
                measured=round(snr_db, 1),
                threshold=settings.PREFLIGHT_WARN_SNR_DB,
            )

    def _voiceprint_reference(self, ref: RecordingAnalysis, report: PreflightReport) -> None:
        assert ref.audio is not None
        speech = speech_only(ref.audio.samples, ref.speech_regions)
        voiceprint, windows = self.engine.voiceprint(speech)
        if not self._usable(REFERENCE, voiceprint):
            return
        ref.voiceprint = voiceprint
        ref.voice = VoiceSample(speech, effective_bandwidth_hz(speech), windows)
        windows = windows[np.isfinite(windows).all(axis=1)]
        if len(windows) < 2:
            return
        score, minority = _two_voice_split(windows)
        report.second_voice_score = score
        minority_s = minority * VOICEPRINT_HOP_S
        if minority_s < settings.PREFLIGHT_SECOND_VOICE_MIN_S:
            return
        if score < settings.PREFLIGHT_SECOND_VOICE_THRESHOLD:
            self.add(
                "multiple_voices",
                ERROR,
                REFERENCE,
                f"The reference holds more than one voice (about {minority_s:.1f} s from a "
                "second speaker); it must contain only the enrolled speaker.",
                measured=round(score, 4),
                threshold=settings.PREFLIGHT_SECOND_VOICE_THRESHOLD,
            )
        elif score < settings.PREFLIGHT_SECOND_VOICE_WARN:
            self.add(
                "multiple_voices",
                POLICY_SEVERITY[settings.PREFLIGHT_SECOND_VOICE_POLICY],
                REFERENCE,
                "Part of the reference may be a second voice; a person should check that only "
                "the enrolled speaker talks in it.",
                measured=round(score, 4),
                threshold=settings.PREFLIGHT_SECOND_VOICE_WARN,
            )

    def _usable(self, role: str, voiceprint: np.ndarray) -> bool:
        # Some models return NaN for short or odd speech; such a vector must never be compared.
        if np.all(np.isfinite(voiceprint)):
            return True
        self.add(
            "voiceprint_unavailable",
            ERROR,
            role,
            f"No usable voiceprint could be computed from the {role} recording; record a longer, "
            "clearer sample.",
        )
        return False

    def _match_consent(
        self, ref: RecordingAnalysis, con: RecordingAnalysis, report: PreflightReport
    ) -> None:
        assert con.audio is not None and ref.voice is not None
        speech = speech_only(con.audio.samples, con.speech_regions)
        voiceprint, windows = self.engine.voiceprint(speech)
        if not self._usable(CONSENT, voiceprint):
            return
        con.voiceprint = voiceprint
        con.voice = VoiceSample(speech, effective_bandwidth_hz(speech), windows)
        score = voice_match_score(self.engine, ref.voice, con.voice)
        report.consent_match_score = score
        if score < settings.PREFLIGHT_CONSENT_MATCH_THRESHOLD:
            self.add(
                "consent_voice_mismatch",
                ERROR,
                CONSENT,
                "The consent recording is not the same voice as the reference: the enrolled "
                "speaker must give consent in their own voice.",
                measured=round(score, 4),
                threshold=settings.PREFLIGHT_CONSENT_MATCH_THRESHOLD,
            )
        elif score < settings.PREFLIGHT_CONSENT_MATCH_WARN:
            self.add(
                "consent_voice_mismatch",
                POLICY_SEVERITY[settings.PREFLIGHT_CONSENT_POLICY],
                CONSENT,
                "The consent recording could not be confirmed as the reference speaker's "
                "voice; a person should check it.",
                measured=round(score, 4),
                threshold=settings.PREFLIGHT_CONSENT_MATCH_WARN,
            )

    def _find_duplicate(
        self, ref: RecordingAnalysis, report: PreflightReport, known: KnownVoiceprints | None
    ) -> None:
        if known is None or ref.voiceprint is None:
            return
        match = known.best_match(ref.voiceprint)
        threshold = settings.PREFLIGHT_DUPLICATE_THRESHOLD
        if match is None or match[1] < threshold:
            return
        speaker_id, score = match
        report.duplicate_of, report.duplicate_score = speaker_id, score
        self.add(
            "duplicate_voice",
            POLICY_SEVERITY[settings.PREFLIGHT_DUPLICATE_POLICY],
            REFERENCE,
            f"This voice is already enrolled in the tenant as speaker {speaker_id}.",
            measured=round(score, 4),
            threshold=threshold,
            speaker_id=speaker_id,
        )


def run_preflight(
    reference: BinaryIO, consent: BinaryIO, known_voiceprints: KnownVoiceprints | None = None
) -> PreflightReport:
    return Preflight().run(reference, consent, known_voiceprints)
