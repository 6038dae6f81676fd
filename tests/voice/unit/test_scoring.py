"""The consent check's statistic: bandwidth estimation, band limiting, window match."""

import numpy as np
import pytest

from tests import audio
from voice.engines import EmbeddingEngine
from voice.scoring import (
    VoiceSample,
    band_limit,
    effective_bandwidth_hz,
    narrow_band_rise,
    voice_match_score,
    voice_sample,
    window_match,
)


def harmonics(top_hz: float, seconds: float = 2.0) -> np.ndarray:
    """A buzz of 150 Hz harmonics up to ``top_hz``: a voiced-speech-like spectrum."""
    return sum(audio.tone(seconds, f, amplitude=0.02) for f in np.arange(150.0, top_hz, 150.0))


@pytest.mark.parametrize(
    ("signal", "low", "high"),
    [
        (audio.noise(2.0), 7_500, 8_000),
        (band_limit(audio.noise(2.0), 3_400), 3_300, 3_500),
        (band_limit(audio.noise(2.0), 6_000), 5_900, 6_100),
        (harmonics(3_600), 3_400, 3_800),
        (harmonics(7_000), 6_800, 7_200),
    ],
)
def test_bandwidth_is_where_the_energy_ends(signal, low, high):
    assert low <= effective_bandwidth_hz(signal) <= high


def test_too_short_a_recording_is_taken_as_full_band():
    assert effective_bandwidth_hz(audio.noise(0.01)) == 8_000


def test_band_limit_removes_what_lies_above_the_cutoff_and_keeps_full_band_as_is():
    noise = audio.noise(2.0)
    limited = band_limit(noise, 3_000)
    assert effective_bandwidth_hz(limited) < 3_500
    spectrum = np.abs(np.fft.rfft(limited)) ** 2
    freqs = np.fft.rfftfreq(limited.size, 1 / 16_000)
    assert spectrum[freqs > 4_000].sum() < 1e-4 * spectrum[freqs < 2_500].sum()
    assert band_limit(noise, 8_000) is noise


def unit(rows) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_window_match_is_the_mean_cosine_of_every_window_pair():
    rng = np.random.default_rng(0)
    first, second = unit(rng.normal(size=(7, 16))), unit(rng.normal(size=(4, 16)))
    pairwise = np.mean([a @ b for a in first for b in second])
    assert window_match(first, second) == pytest.approx(pairwise)


def test_windows_that_disagree_score_lower_than_the_cosine_of_their_averages():
    # Same average direction, but the second recording's windows scatter around it.
    steady = unit([[1.0, 0.0, 0.0]] * 4)
    scattered = unit([[1.0, 1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 0.0, 1.0], [1.0, 0.0, -1.0]])
    averaged = unit([scattered.mean(axis=0)])[0]
    assert steady[0] @ averaged == pytest.approx(1.0)
    assert window_match(steady, scattered) == pytest.approx(np.sqrt(0.5))


class BandSensingEngine(EmbeddingEngine):
    """Embeds wideband audio as one voice and narrow-band audio as a nearby one, and
    records the bandwidth of every input it embeds."""

    dimension = 2
    model_version = "test"

    def __init__(self, model_id: str = "resemblyzer/ge2e-voice-encoder") -> None:
        self.model_id = model_id
        self.embedded_bands: list[float] = []

    def embed(self, speech: np.ndarray) -> np.ndarray:
        return self.embed_windows(speech, 1.6, 0.5)[0]

    def embed_windows(self, speech: np.ndarray, window_s: float, hop_s: float) -> np.ndarray:
        band = effective_bandwidth_hz(speech)
        self.embedded_bands.append(band)
        vector = [1.0, 0.0] if band > 5_000 else [0.8, 0.6]
        return np.asarray([vector, vector], dtype=np.float32)


def test_a_wider_recording_is_embedded_again_within_the_narrower_band():
    engine = BandSensingEngine()
    wide = voice_sample(engine, audio.noise(2.0))
    narrow = voice_sample(engine, band_limit(audio.noise(2.0, seed=1), 3_400))
    engine.embedded_bands.clear()
    score = voice_match_score(engine, wide, narrow)
    # Only the wideband recording is embedded again, now within the telephone band.
    assert len(engine.embedded_bands) == 1 and engine.embedded_bands[0] < 3_800
    assert score == pytest.approx(1.0 - narrow_band_rise(engine.model_id, narrow.bandwidth_hz))


def test_recordings_of_one_band_are_compared_as_embedded():
    engine = BandSensingEngine()
    first, second = voice_sample(engine, audio.noise(2.0)), voice_sample(engine, audio.noise(2.0))
    engine.embedded_bands.clear()
    assert voice_match_score(engine, first, second) == pytest.approx(1.0)
    assert engine.embedded_bands == []


def test_narrow_band_calibration_is_per_model_and_follows_the_bandwidth():
    windows = np.asarray([[1.0, 0.0]], dtype=np.float32)
    narrow = VoiceSample(np.zeros(1), 3_500.0, windows)
    measured, unmeasured = BandSensingEngine(), BandSensingEngine("some/pyannote-model")
    assert voice_match_score(measured, narrow, narrow) == pytest.approx(1.0 - 0.053)
    assert voice_match_score(unmeasured, narrow, narrow) == pytest.approx(1.0)
    rise = [narrow_band_rise(measured.model_id, hz) for hz in (2_000, 3_750, 5_500, 8_000)]
    assert rise == pytest.approx([0.067, 0.0435, 0.0115, 0.0])
