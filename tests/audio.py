"""Test audio that any machine has: the pyannote.audio wheel's sample and generated signals."""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

import av
import numpy as np

RATE = 16_000

# From the wheel's sample.rttm: speaker90 ("A") and speaker91 ("B"), single-speaker stretches.
SPEAKER_A = [(10.6, 14.45), (18.6, 21.4)]
SPEAKER_A_CONSENT = [(8.35, 9.9), (27.9, 30.0)]
SPEAKER_B = [(21.9, 28.4)]
SPEAKER_B_CONSENT = [(14.6, 17.9)]
TWO_SPEAKERS = [(10.6, 14.45), (21.9, 25.5)]


def sample_path() -> Path:
    import pyannote.audio

    return Path(pyannote.audio.__file__).parent / "sample" / "sample.wav"


def sample_rttm_path() -> Path:
    return sample_path().with_name("sample.rttm")


@cache
def sample() -> np.ndarray:
    with av.open(str(sample_path())) as container:
        frames = [f.to_ndarray()[0] for f in container.decode(audio=0)]
    return (np.concatenate(frames).astype(np.float32) / 32768.0).copy()


def clip(ranges: list[tuple[float, float]]) -> np.ndarray:
    audio = sample()
    return np.concatenate([audio[int(a * RATE) : int(b * RATE)] for a, b in ranges])


def tone(
    seconds: float, freq: float = 440.0, amplitude: float = 0.3, rate: int = RATE
) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, amplitude: float = 0.1, seed: int = 0, rate: int = RATE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (amplitude * rng.standard_normal(int(seconds * rate))).astype(np.float32)


def silence(seconds: float, rate: int = RATE) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.float32)


_CODECS = {
    "wav": ("wav", "pcm_s16le", "s16"),
    "flac": ("flac", "flac", "s16"),
    "mp3": ("mp3", "libmp3lame", "fltp"),
    "ogg": ("ogg", "libopus", "flt"),
    "m4a": ("ipod", "aac", "fltp"),
}


def encode(samples: np.ndarray, fmt: str = "wav", rate: int = RATE) -> bytes:
    """Encode mono float samples in [-1, 1] with PyAV."""
    container_format, codec, sample_format = _CODECS[fmt]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        pcm = np.clip(samples, -1.0, 1.0).astype(np.float32)
        data = (pcm * 32767).astype(np.int16)[None] if sample_format == "s16" else pcm[None]
        frame = av.AudioFrame.from_ndarray(data, format=sample_format, layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def other_voice(samples: np.ndarray) -> np.ndarray:
    """The speech slowed to two thirds: pitch and formants drop, a voice unlike the original."""
    from scipy.signal import resample_poly

    return resample_poly(samples, 3, 2).astype(np.float32)


def resample(samples: np.ndarray, rate: int) -> np.ndarray:
    from scipy.signal import resample_poly

    return resample_poly(samples, rate, RATE).astype(np.float32)
