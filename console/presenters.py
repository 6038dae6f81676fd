"""Preflight findings in words a person understands."""

from __future__ import annotations

from typing import Any

EXPLANATIONS = {
    "audio_undecodable": "The file could not be read as audio.",
    "audio_unsupported_format": "This kind of file is not accepted (use WAV, MP3, FLAC, OGG, M4A).",
    "audio_too_long": "The recording is longer than the service accepts.",
    "sample_rate_too_low": "The recording's quality is too low (its sample rate is too low).",
    "too_little_speech": "There is not enough speech in the recording to recognise the voice.",
    "more_speech_recommended": "More speech would make the voice easier to recognise.",
    "clipping": "The recording is too loud: parts of it are distorted.",
    "low_snr": "There is too much background noise compared with the voice.",
    "multiple_voices": "More than one person seems to speak in the reference recording.",
    "consent_no_speech": "Nobody can be heard speaking in the consent recording.",
    "consent_voice_mismatch": "The consent recording does not sound like the same person.",
    "voiceprint_unavailable": "No voiceprint could be made from the recording.",
    "duplicate_voice": "This voice looks like a speaker already enrolled in this tenant.",
}


def finding_explanations(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each finding with a plain-language headline next to the service's own message."""
    return [
        {
            **finding,
            "headline": EXPLANATIONS.get(finding.get("code", ""), finding.get("code", "")),
            "is_error": finding.get("severity") == "error",
            "holds_for_review": finding.get("severity") == "review",
        }
        for finding in findings
    ]
