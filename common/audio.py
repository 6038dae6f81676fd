"""Audio intake: recognise the container by content, enforce limits, decode to 16 kHz mono.

Decoding goes through PyAV (bundled FFmpeg). The declared duration is checked
before decoding, and decoding stops as soon as the decoded audio runs past the
limit, so a lying header cannot make us decode hours of audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

import av
import numpy as np

TARGET_SAMPLE_RATE = 16_000

# FFmpeg demuxer name -> the format we report. Anything else is refused.
SUPPORTED_CONTAINERS = {
    "wav": "wav",
    "mp3": "mp3",
    "flac": "flac",
    "ogg": "ogg",
    "mov,mp4,m4a,3gp,3g2,mj2": "m4a",
}

# Integer PCM full scale maps just below 1.0 after conversion to float.
CLIPPING_LEVEL = 0.999


class AudioRejected(Exception):
    """The recording cannot be used; ``code`` is the preflight finding code."""

    def __init__(
        self, code: str, message: str, measured: float | None = None, threshold: float | None = None
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.measured = measured
        self.threshold = threshold


@dataclass(frozen=True)
class DecodedAudio:
    format: str
    codec: str
    original_sample_rate: int
    channels: int
    duration_s: float
    samples: np.ndarray  # float32, mono, TARGET_SAMPLE_RATE
    clipped_fraction: float

    @property
    def sample_rate(self) -> int:
        return TARGET_SAMPLE_RATE


def _open(source: BinaryIO) -> av.container.InputContainer:
    try:
        return av.open(source, mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise AudioRejected(
            "audio_undecodable", f"The file could not be read as audio ({exc.__class__.__name__})."
        ) from exc


def _declared_duration(
    container: av.container.InputContainer, stream: av.AudioStream
) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def decode_audio(
    source: BinaryIO, *, max_duration_s: float, keep_samples: bool = True
) -> DecodedAudio:
    """Decodes to 16 kHz mono float; ``keep_samples=False`` only checks and measures it
    (``samples`` is then empty), so that validating hours of audio costs no memory."""
    container = _open(source)
    try:
        demuxer = container.format.name
        if demuxer not in SUPPORTED_CONTAINERS:
            raise AudioRejected(
                "audio_unsupported_format",
                f"The file is '{demuxer}', not one of wav, mp3, flac, ogg or m4a.",
            )
        if not container.streams.audio:
            raise AudioRejected("audio_undecodable", "The file has no audio stream.")
        stream = container.streams.audio[0]
        rate = _sample_rate(stream)
        if not rate or rate <= 0:
            raise AudioRejected("audio_undecodable", "The audio stream has no sample rate.")
        declared = _declared_duration(container, stream)
        if declared is not None and declared > max_duration_s:
            raise AudioRejected(
                "audio_too_long",
                f"The recording lasts {declared:.1f} s; at most {max_duration_s:.0f} s "
                "is accepted.",
                measured=round(declared, 3),
                threshold=max_duration_s,
            )
        fmt = SUPPORTED_CONTAINERS[demuxer]
        return _decode_stream(container, stream, int(rate), fmt, max_duration_s, keep_samples)
    finally:
        container.close()


def _sample_rate(stream: av.AudioStream) -> int:
    # A header with nonsense in it (zero-bit samples, say) leaves PyAV without a rate, and
    # asking for it raises instead of answering 0.
    try:
        return int(stream.rate or stream.codec_context.sample_rate or 0)
    except (AttributeError, ValueError, OverflowError):
        return 0


def _clipped_samples(frame: av.AudioFrame) -> tuple[int, int]:
    """Samples at full scale in the frame as decoded, before any resampling smooths them."""
    block = frame.to_ndarray()
    if np.issubdtype(block.dtype, np.integer):
        info = np.iinfo(block.dtype.type)  # type: ignore[type-var]
        centre = (int(info.max) + 1) // 2 if info.min == 0 else 0
        level = np.abs(block.astype(np.float64) - centre) / (int(info.max) - centre)
    else:
        level = np.abs(block)
    return int(np.count_nonzero(level >= CLIPPING_LEVEL)), int(block.size)


def _decode_stream(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    rate: int,
    fmt: str,
    max_duration_s: float,
    keep_samples: bool = True,
) -> DecodedAudio:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=TARGET_SAMPLE_RATE)
    max_samples = int((max_duration_s + 1.0) * TARGET_SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    decoded = 0
    clipped = 0
    measured = 0
    try:
        for frame in container.decode(stream):
            frame_clipped, frame_size = _clipped_samples(frame)
            clipped += frame_clipped
            measured += frame_size
            for out in resampler.resample(frame):
                if keep_samples:
                    chunks.append(out.to_ndarray()[0])
                decoded += out.samples
            if decoded > max_samples:
                raise AudioRejected(
                    "audio_too_long",
                    f"The recording runs past {max_duration_s:.0f} s, the longest accepted.",
                    measured=round(decoded / TARGET_SAMPLE_RATE, 3),
                    threshold=max_duration_s,
                )
        for out in resampler.resample(None):
            if keep_samples:
                chunks.append(out.to_ndarray()[0])
            decoded += out.samples
    except (av.error.FFmpegError, ValueError) as exc:
        if not decoded:
            raise AudioRejected(
                "audio_undecodable", f"The audio could not be decoded ({exc.__class__.__name__})."
            ) from exc
        # A truncated tail leaves the decoded head usable; the preflight judges what is left.
    if decoded == 0:
        raise AudioRejected("audio_undecodable", "The file contains no decodable audio samples.")

    mono = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    mono = mono.astype(np.float32, copy=False)
    mono = np.clip(np.nan_to_num(mono, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    return DecodedAudio(
        format=fmt,
        codec=stream.codec_context.name,
        original_sample_rate=rate,
        channels=stream.channels,
        duration_s=decoded / TARGET_SAMPLE_RATE,
        samples=mono,
        clipped_fraction=clipped / max(1, measured),
    )
