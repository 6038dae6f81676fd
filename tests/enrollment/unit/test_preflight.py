"""Every preflight code has a test that triggers it and one that passes."""

import io

import numpy as np
import pytest
from django.conf import settings as service_settings

from enrollment.preflight import (
    ERROR,
    REVIEW,
    WARNING,
    Preflight,
    estimate_snr_db,
)
from tests import audio
from voice.gallery import EnrolledGallery
from voice.vad import SpeechRegion

REFERENCE_A = audio.clip(audio.SPEAKER_A)
CONSENT_A = audio.clip(audio.SPEAKER_A_CONSENT)


def run(reference: bytes, consent: bytes, known=None):
    return Preflight().run(io.BytesIO(reference), io.BytesIO(consent), known)


def codes(report, severity=None):
    return {f.code for f in report.findings if severity is None or f.severity == severity}


def finding(report, code):
    return next(f for f in report.findings if f.code == code)


@pytest.fixture(scope="module")
def good_report():
    return run(audio.encode(REFERENCE_A), audio.encode(CONSENT_A))


def test_clean_enrollment_passes_with_measured_values(good_report):
    assert good_report.passed, good_report.findings
    summary = good_report.to_dict()
    assert summary["reference"]["speech_s"] > 5.0
    assert summary["reference"]["sample_rate_hz"] == 16_000
    assert summary["reference"]["snr_db"] > 15
    assert summary["consent_match_score"] >= service_settings.PREFLIGHT_CONSENT_MATCH_WARN
    assert summary["quality_grade"] == "fair"
    assert summary["recommended_additional_speech_s"] > 10
    assert summary["embedding_model"]["id"] == "resemblyzer/ge2e-voice-encoder"
    assert good_report.reference.voiceprint.shape == (256,)
    for code in (
        "audio_undecodable",
        "audio_unsupported_format",
        "audio_too_long",
        "sample_rate_too_low",
        "too_little_speech",
        "clipping",
        "multiple_voices",
        "consent_no_speech",
        "consent_voice_mismatch",
        "duplicate_voice",
    ):
        assert code not in codes(good_report)


def test_more_speech_is_recommended_below_the_recommended_length(good_report):
    hint = finding(good_report, "more_speech_recommended")
    assert hint.severity == WARNING
    assert hint.threshold == 20.0


def test_long_reference_gets_no_more_speech_hint(settings):
    settings.PREFLIGHT_RECOMMENDED_SPEECH_S = 5.0
    report = run(audio.encode(REFERENCE_A), audio.encode(CONSENT_A))
    assert "more_speech_recommended" not in codes(report)
    assert report.quality_grade() == "strong"


def test_undecodable_reference_is_reported_and_other_checks_skip():
    report = run(b"definitely not audio" * 50, audio.encode(CONSENT_A))
    assert not report.passed
    assert codes(report, ERROR) == {"audio_undecodable"}
    assert finding(report, "audio_undecodable").recording == "reference"


def test_unsupported_container_is_reported():
    report = run(b"\x89PNG\r\n\x1a\n" + bytes(600), audio.encode(CONSENT_A))
    assert "audio_unsupported_format" in codes(report, ERROR)


def test_too_long_recording_is_reported(settings):
    settings.ENROLLMENT_MAX_DURATION_S = 4.0
    report = run(audio.encode(REFERENCE_A), audio.encode(CONSENT_A))
    too_long = finding(report, "audio_too_long")
    assert too_long.recording == "reference"
    assert too_long.measured == pytest.approx(6.65, abs=0.1)


def test_sample_rate_below_8khz_is_reported():
    low = audio.resample(REFERENCE_A, 6000)
    report = run(audio.encode(low, rate=6000), audio.encode(CONSENT_A))
    low_rate = finding(report, "sample_rate_too_low")
    assert (low_rate.measured, low_rate.threshold, low_rate.severity) == (6000, 8000, ERROR)


def test_8khz_telephone_audio_is_accepted():
    report = run(
        audio.encode(audio.resample(REFERENCE_A, 8000), rate=8000), audio.encode(CONSENT_A)
    )
    assert "sample_rate_too_low" not in codes(report)
    assert report.passed, report.findings


@pytest.mark.parametrize(
    "signal",
    [audio.silence(5.0), audio.noise(5.0, 0.05), audio.tone(5.0)],
    ids=["silence", "noise", "tone"],
)
def test_no_speech_in_the_reference_is_too_little_speech(signal):
    report = run(audio.encode(signal), audio.encode(CONSENT_A))
    short = finding(report, "too_little_speech")
    assert short.measured < 0.5
    assert short.threshold == 3.0


def test_under_three_seconds_of_speech_is_too_little():
    report = run(audio.encode(audio.clip([(10.6, 12.6)])), audio.encode(CONSENT_A))
    short = finding(report, "too_little_speech")
    assert 1.0 < short.measured < 3.0


def test_clipped_reference_is_reported():
    loud = np.clip(REFERENCE_A * 20, -1, 1)
    report = run(audio.encode(loud), audio.encode(CONSENT_A))
    clipped = finding(report, "clipping")
    assert clipped.severity == ERROR
    assert clipped.measured > clipped.threshold


def test_noisy_reference_is_low_snr():
    noisy = REFERENCE_A + audio.noise(REFERENCE_A.size / 16_000, 0.02, seed=1)
    report = run(audio.encode(noisy), audio.encode(CONSENT_A))
    low = next(f for f in report.findings if f.code == "low_snr" and f.recording == "reference")
    assert low.severity == ERROR
    assert low.measured < 5.0


def test_snr_estimate_tracks_added_noise():
    regions = [SpeechRegion(0, REFERENCE_A.size)]
    clean = estimate_snr_db(REFERENCE_A, regions)
    noisy = estimate_snr_db(REFERENCE_A + audio.noise(REFERENCE_A.size / 16_000, 0.01), regions)
    assert clean is not None and noisy is not None
    assert clean > noisy + 10


def test_a_second_voice_in_the_reference_is_rejected(good_report):
    mixed = np.concatenate(
        [audio.clip([(10.6, 14.45)]), audio.other_voice(audio.clip(audio.SPEAKER_B))[: 4 * 16_000]]
    )
    report = run(audio.encode(mixed), audio.encode(CONSENT_A))
    multiple = finding(report, "multiple_voices")
    assert multiple.severity == ERROR
    assert multiple.measured < multiple.threshold
    assert good_report.second_voice_score > 0.80


@pytest.mark.parametrize(
    ("policy", "severity"), [("review", REVIEW), ("warn", WARNING), ("reject", ERROR)]
)
def test_two_similar_telephone_voices_follow_the_second_voice_policy(settings, policy, severity):
    settings.PREFLIGHT_SECOND_VOICE_POLICY = policy
    report = run(audio.encode(audio.clip(audio.TWO_SPEAKERS)), audio.encode(CONSENT_A))
    multiple = finding(report, "multiple_voices")
    assert multiple.severity == severity
    assert 0.76 <= multiple.measured < multiple.threshold
    assert report.needs_review == (policy == "review")
    assert report.passed == (policy != "reject")


def test_silent_consent_recording_is_reported():
    report = run(audio.encode(REFERENCE_A), audio.encode(audio.silence(3.0)))
    assert finding(report, "consent_no_speech").recording == "consent"
    assert report.consent_match_score is None


def test_consent_in_another_voice_is_rejected(good_report):
    stranger = audio.other_voice(audio.clip(audio.SPEAKER_B_CONSENT))
    report = run(audio.encode(REFERENCE_A), audio.encode(stranger))
    mismatch = finding(report, "consent_voice_mismatch")
    assert mismatch.severity == ERROR
    assert mismatch.measured < mismatch.threshold
    assert good_report.consent_match_score >= service_settings.PREFLIGHT_CONSENT_MATCH_WARN


@pytest.mark.parametrize(
    ("reference", "other_consent"),
    [(audio.SPEAKER_A, audio.SPEAKER_B_CONSENT), (audio.SPEAKER_B, audio.SPEAKER_A_CONSENT)],
)
def test_consent_in_a_similar_voice_is_held_for_review_by_default(reference, other_consent):
    # The sample's two telephone voices score close; with the default thresholds neither
    # speaker's consent may pass for the other's without a person's review.
    report = run(audio.encode(audio.clip(reference)), audio.encode(audio.clip(other_consent)))
    mismatch = finding(report, "consent_voice_mismatch")
    assert mismatch.severity == REVIEW
    assert (
        service_settings.PREFLIGHT_CONSENT_MATCH_THRESHOLD
        <= mismatch.measured
        < service_settings.PREFLIGHT_CONSENT_MATCH_WARN
    )
    assert report.passed and report.needs_review
    assert report.to_dict()["needs_review"] is True
    assert report.held_findings() == [mismatch]


def test_each_sample_speakers_own_consent_passes():
    for reference, consent in (
        (audio.SPEAKER_A, audio.SPEAKER_A_CONSENT),
        (audio.SPEAKER_B, audio.SPEAKER_B_CONSENT),
    ):
        report = run(audio.encode(audio.clip(reference)), audio.encode(audio.clip(consent)))
        assert "consent_voice_mismatch" not in codes(report)
        assert report.consent_match_score >= service_settings.PREFLIGHT_CONSENT_MATCH_WARN
        # Both recordings are telephone band: compared, and calibrated, as narrow-band.
        summary = report.to_dict()
        assert 3_400 <= summary["reference"]["bandwidth_hz"] < 4_500
        assert 3_400 <= summary["consent"]["bandwidth_hz"] < 4_500


@pytest.mark.parametrize(("policy", "severity"), [("warn", WARNING), ("reject", ERROR)])
def test_consent_in_a_similar_voice_follows_the_consent_policy(settings, policy, severity):
    settings.PREFLIGHT_CONSENT_POLICY = policy
    report = run(audio.encode(REFERENCE_A), audio.encode(audio.clip(audio.SPEAKER_B_CONSENT)))
    assert finding(report, "consent_voice_mismatch").severity == severity
    assert not report.needs_review
    assert report.passed == (policy == "warn")


def test_the_same_speakers_consent_is_not_held(good_report):
    assert not good_report.needs_review and good_report.held_findings() == []


def test_same_voice_enrolled_twice_is_a_warning_with_the_speaker_id(settings, good_report):
    settings.PREFLIGHT_DUPLICATE_POLICY = "warn"
    known = EnrolledGallery(["speaker-1"], good_report.reference.voiceprint[None, :])
    report = run(audio.encode(REFERENCE_A), audio.encode(CONSENT_A), known)
    duplicate = finding(report, "duplicate_voice")
    assert duplicate.severity == WARNING
    assert duplicate.extra["speaker_id"] == "speaker-1"
    assert report.passed


def test_duplicate_voice_can_be_configured_to_reject(settings, good_report):
    settings.PREFLIGHT_DUPLICATE_POLICY = "reject"
    known = EnrolledGallery(["speaker-1"], good_report.reference.voiceprint[None, :])
    report = run(audio.encode(REFERENCE_A), audio.encode(CONSENT_A), known)
    assert finding(report, "duplicate_voice").severity == ERROR
    assert not report.passed


def test_duplicate_voice_is_held_for_review_under_the_review_policy(settings, good_report):
    settings.PREFLIGHT_DUPLICATE_POLICY = "review"
    known = EnrolledGallery(["speaker-1"], good_report.reference.voiceprint[None, :])
    report = run(audio.encode(REFERENCE_A), audio.encode(CONSENT_A), known)
    assert finding(report, "duplicate_voice").severity == REVIEW
    assert report.passed and report.needs_review


def test_another_voice_is_not_a_duplicate(good_report):
    other = run(
        audio.encode(audio.clip(audio.SPEAKER_B)), audio.encode(audio.clip(audio.SPEAKER_B_CONSENT))
    )
    assert other.passed, other.findings
    known = EnrolledGallery(["speaker-a"], good_report.reference.voiceprint[None, :])
    report = run(
        audio.encode(audio.clip(audio.SPEAKER_B)),
        audio.encode(audio.clip(audio.SPEAKER_B_CONSENT)),
        known,
    )
    assert "duplicate_voice" not in codes(report)


def test_every_finding_is_machine_readable():
    report = run(b"junk" * 100, audio.encode(audio.silence(2.0)))
    for item in report.to_dict()["findings"]:
        assert set(item) >= {"code", "severity", "recording", "message", "measured", "threshold"}
        assert item["severity"] in {ERROR, REVIEW, WARNING}


def test_a_nan_voiceprint_is_rejected_not_compared(monkeypatch):
    # Some pyannote models return NaN embeddings for short speech (pyannote.audio issue 1961).
    preflight = Preflight()
    real = preflight.engine.voiceprint

    def nan_for_consent(speech):
        vector, windows = real(speech)
        return (
            (np.full_like(vector, np.nan), windows)
            if speech.size < 5 * 16_000
            else (vector, windows)
        )

    monkeypatch.setattr(preflight.engine, "voiceprint", nan_for_consent)
    report = preflight.run(
        io.BytesIO(audio.encode(REFERENCE_A)), io.BytesIO(audio.encode(CONSENT_A))
    )
    unusable = finding(report, "voiceprint_unavailable")
    assert (unusable.recording, unusable.severity) == ("consent", ERROR)
    assert report.consent_match_score is None
    assert "NaN" not in str(report.to_dict())
