"""Scoring two recordings as the same voice or not: the consent check's statistic.

Three measured choices (bench/accuracy.py, section 4, and the README's *Voice checks*):

- Window match. The score is the mean cosine similarity over every pair of a
  reference window and a consent window (1.6 s windows, 0.5 s hop), not the cosine of
  the two averaged voiceprints. It equals the dot product of the two unnormalised
  window means, so a recording whose windows disagree among themselves (a second
  voice, noise, a mispronounced phrase) scores lower instead of averaging into a clean
  looking voiceprint. On LibriSpeech it separates genuine from impostor pairs better
  than the averaged voiceprints do (no impostor above the genuine floor).
- Band matching. The bandwidth of each recording is estimated from its spectrum; when
  one is narrower (a telephone consent against a wideband reference) both are
  low-passed to the narrower band and embedded again, so the score compares voices,
  not microphones. A wideband reference against 3.4 kHz consent loses about 0.09 of
  genuine score without it.
- Band calibration. Narrow-band speech makes every voice sound more alike to an
  embedding model: on LibriSpeech low-passed to 3.5 kHz the Resemblyzer window match of
  every pair (same and different speakers) rises by 0.053 on average, by 0.023 at 5 kHz,
  not at all from 6 kHz. That rise, measured per model at several band edges
  (``bench/accuracy.py --sections consent``) and interpolated, is subtracted from the
  score so one set of thresholds holds at every bandwidth. A model with no measurement
  here gets no correction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, sosfiltfilt, welch

from voice.engines import SAMPLE_RATE, EmbeddingEngine

NYQUIST_HZ = SAMPLE_RATE / 2
# Band-limit only when the recordings' bandwidths differ by more than this: estimates of
# the same channel wobble by a few hundred hertz.
BAND_MISMATCH_HZ = 500.0
# The band edge is the highest frequency whose power is within this many decibels of the
# typical speech level (the median of 300-3000 Hz); the stopband of a telephone channel or
# an 8 kHz recording resampled to 16 kHz lies 40-60 dB below it.
BAND_EDGE_DB = 35.0
SPECTRUM_SEGMENT = 1024
FILTER_ORDER = 10

# Measured mean rise of the window match when both recordings are low-passed to a band
# edge, by model id: (edge Hz, rise), interpolated between edges; below the first edge its
# rise holds, above the last (full band) there is none.
NARROW_BAND_RISE = {
    "resemblyzer/ge2e-voice-encoder": (
        (3_000.0, 0.067),
        (3_500.0, 0.053),
        (4_000.0, 0.034),
        (4_500.0, 0.027),
        (5_000.0, 0.023),
        (6_000.0, 0.0),
    )
}


@dataclass(frozen=True)
class VoiceSample:
    """A recording's speech, its estimated bandwidth and its window embeddings."""

    speech: np.ndarray
    bandwidth_hz: float
    windows: np.ndarray


def effective_bandwidth_hz(speech: np.ndarray) -> float:
    """The highest frequency that still carries speech energy, from the power spectrum."""
    if speech.size < SPECTRUM_SEGMENT:
        return NYQUIST_HZ
    freqs, power = welch(speech, fs=SAMPLE_RATE, nperseg=SPECTRUM_SEGMENT)
    level = 10 * np.log10(power + 1e-20)
    speech_band = (freqs >= 300) & (freqs <= 3000)
    typical = float(np.median(level[speech_band]))
    # Never empty: half the speech band lies at or above its own median.
    carrying = np.nonzero(level >= typical - BAND_EDGE_DB)[0]
    return float(freqs[carrying[-1]])


def band_limit(speech: np.ndarray, edge_hz: float) -> np.ndarray:
    """Low-pass filtered copy of the speech whose band edge, as ``effective_bandwidth_hz``
    measures it, lies at ``edge_hz``."""
    if edge_hz >= NYQUIST_HZ * 0.98:
        return speech
    # The zero-phase filter runs twice (forward and back), so a digital Butterworth of order
    # N attenuates 2 * 10 * log10(1 + (tan(pi f / fs) / tan(pi cutoff / fs)) ** 2N) dB:
    # place BAND_EDGE_DB at the edge.
    ratio = (10 ** (BAND_EDGE_DB / 20) - 1) ** (1 / (2 * FILTER_ORDER))
    warped = np.tan(np.pi * edge_hz / SAMPLE_RATE) / ratio
    cutoff_hz = float(np.arctan(warped) * SAMPLE_RATE / np.pi)
    sos = butter(FILTER_ORDER, cutoff_hz, fs=SAMPLE_RATE, output="sos")
    return sosfiltfilt(sos, speech).astype(np.float32)


def window_match(first: np.ndarray, second: np.ndarray) -> float:
    """Mean cosine similarity over all pairs of windows, one from each recording (the
    windows are unit vectors: the mean of the pairwise dot products is the dot product of
    the means)."""
    return float(first.mean(axis=0) @ second.mean(axis=0))


def voice_sample(engine: EmbeddingEngine, speech: np.ndarray) -> VoiceSample:
    _, windows = engine.voiceprint(speech)
    return VoiceSample(speech, effective_bandwidth_hz(speech), windows)


def _windows_within(engine: EmbeddingEngine, sample: VoiceSample, band_hz: float) -> np.ndarray:
    if sample.bandwidth_hz - band_hz <= BAND_MISMATCH_HZ:
        return sample.windows
    return engine.voiceprint(band_limit(sample.speech, band_hz))[1]


def narrow_band_rise(model_id: str, bandwidth_hz: float) -> float:
    measured = NARROW_BAND_RISE.get(model_id)
    if measured is None:
        return 0.0
    edges, rises = zip(*measured, strict=True)
    return float(np.interp(bandwidth_hz, edges, rises))


def voice_match_score(engine: EmbeddingEngine, reference: VoiceSample, other: VoiceSample) -> float:
    """The consent check's score: window match within the common band, band-calibrated."""
    common_hz = min(reference.bandwidth_hz, other.bandwidth_hz)
    score = window_match(
        _windows_within(engine, reference, common_hz), _windows_within(engine, other, common_hz)
    )
    return score - narrow_band_rise(engine.model_id, common_hz)
