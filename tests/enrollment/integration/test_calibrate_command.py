"""``manage.py calibrate_voice_checks`` on the pyannote sample split into two speakers."""

import io
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from tests import audio
from voice.engines import get_engine

# The sample's two speakers, one recording per clip (tests/audio.py's stretches).
RECORDINGS = {
    "speaker_a": [[(10.6, 14.45)], [(18.6, 21.4)], audio.SPEAKER_A_CONSENT],
    "speaker_b": [[(21.9, 25.0)], [(25.0, 28.4)], audio.SPEAKER_B_CONSENT],
}


def write_speakers(root: Path, recordings=RECORDINGS) -> Path:
    for speaker, clips in recordings.items():
        folder = root / speaker
        folder.mkdir(parents=True)
        for index, ranges in enumerate(clips):
            (folder / f"{index}.wav").write_bytes(audio.encode(audio.clip(ranges)))
    return root


def calibrate(*args: str) -> str:
    out = io.StringIO()
    call_command("calibrate_voice_checks", *args, stdout=out)
    return out.getvalue()


def test_prints_rates_at_the_configured_thresholds_and_for_a_target(tmp_path):
    output = calibrate(str(write_speakers(tmp_path)))
    assert "2 speakers, 6 recordings; 12 genuine and 18 impostor pairs" in output
    assert "configured: refuse below 0.600, review below 0.680" in output
    target = output[output.index("for a false-accept rate of at most 0") :]
    assert "false accepts (impostor passes without review): 0/18 (0.0%)" in target
    assert "PREFLIGHT_CONSENT_MATCH_THRESHOLD=" in output
    assert "PREFLIGHT_CONSENT_MATCH_WARN=" in output


def test_the_target_rate_moves_the_review_threshold(tmp_path):
    write_speakers(tmp_path)
    strict = calibrate(str(tmp_path))
    loose = calibrate(str(tmp_path), "--target-far", "0.5")

    def review(output: str) -> float:
        return float(output.rsplit("PREFLIGHT_CONSENT_MATCH_WARN=", 1)[1].split()[0])

    assert review(loose) < review(strict)


def test_an_empty_directory_is_refused(tmp_path):
    with pytest.raises(CommandError, match="no speaker folders"):
        calibrate(str(tmp_path))


def test_a_missing_directory_is_refused(tmp_path):
    with pytest.raises(CommandError, match="is not a directory"):
        calibrate(str(tmp_path / "nowhere"))


def test_a_single_speaker_is_refused(tmp_path):
    write_speakers(tmp_path, {"speaker_a": RECORDINGS["speaker_a"]})
    with pytest.raises(CommandError, match="one speaker"):
        calibrate(str(tmp_path))


def test_speakers_with_one_recording_each_are_refused(tmp_path):
    write_speakers(tmp_path, {name: clips[:1] for name, clips in RECORDINGS.items()})
    with pytest.raises(CommandError, match="genuine pairs need two"):
        calibrate(str(tmp_path))


def test_an_undecodable_file_is_named(tmp_path):
    write_speakers(tmp_path)
    (tmp_path / "speaker_b" / "notes.wav").write_bytes(b"not audio" * 50)
    with pytest.raises(CommandError, match="notes.wav"):
        calibrate(str(tmp_path))


def test_a_recording_without_speech_is_named(tmp_path):
    write_speakers(tmp_path)
    (tmp_path / "speaker_a" / "quiet.wav").write_bytes(audio.encode(audio.silence(2.0)))
    with pytest.raises(CommandError, match="quiet.wav: no audible speech"):
        calibrate(str(tmp_path))


def test_a_recording_without_a_usable_voiceprint_is_named(tmp_path, monkeypatch):
    # Some pyannote models return NaN embeddings for short speech (pyannote.audio issue 1961).
    write_speakers(tmp_path)
    engine = get_engine()
    real = engine.voiceprint

    def nan_for_short_speech(speech):
        vector, windows = real(speech)
        return (vector, np.full_like(windows, np.nan) if speech.size < 3 * 16_000 else windows)

    monkeypatch.setattr(engine, "voiceprint", nan_for_short_speech)
    with pytest.raises(CommandError, match="no usable voiceprint"):
        calibrate(str(tmp_path))


@pytest.mark.parametrize("rate", ["-0.1", "1"])
def test_a_target_rate_outside_zero_to_one_is_refused(tmp_path, rate):
    write_speakers(tmp_path)
    with pytest.raises(CommandError, match="must be in"):
        calibrate(str(tmp_path), "--target-far", rate)
