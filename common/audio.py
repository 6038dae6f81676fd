"""Audio intake: recognise the container by content, enforce limits, decode to 16 kHz mono.

Decoding goes through PyAV (bundled FFmpeg). Two limits: the duration, and optionally the
cost of decoding, counted in input samples across every channel (so that 8 channels at
384 kHz pay 192 times what 16 kHz mono pays for the same seconds). What the header declares
is checked before decoding (``probe_audio`` stops there), and decoding stops as soon as the
audio runs past either limit, so a lying header cannot make us decode hours of audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO

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
class AudioHeader:
    """What a container's header declares, read without decoding the audio."""

    format: str
    codec: str
    sample_rate: int
    channels: int
    duration_s: float | None  # None: the header declares none

    @property
    def input_samples(self) -> int | None:
        """The samples, across every channel, that decoding it would take."""
        if self.duration_s is None:
            return None
        return int(self.duration_s * self.sample_rate * self.channels)


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


def _open(source: IO[bytes]) -> av.container.InputContainer:
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


def probe_audio(
    source: IO[bytes], *, max_duration_s: float, max_input_samples: int | None = None
) -> AudioHeader:
    """Reads the container's header, and no more than FFmpeg's bounded probe of the stream
    parameters, and refuses what it declares over a limit. A header that declares no
    duration, or lies, passes here: decoding enforces the limits on what the file holds."""
    container = _open(source)
    try:
        header, _ = _read_header(container)
        _refuse_declared(header, max_duration_s, max_input_samples)
        return header
    finally:
        container.close()


def decode_audio(
    source: IO[bytes],
    *,
    max_duration_s: float,
    max_input_samples: int | None = None,
    keep_samples: bool = True,
) -> DecodedAudio:
    """Decodes to 16 kHz mono float; ``keep_samples=False`` only checks and measures it
    (``samples`` is then empty), so that validating hours of audio costs no memory."""
    container = _open(source)
    try:
        header, stream = _read_header(container)
        _refuse_declared(header, max_duration_s, max_input_samples)
        return _decode_stream(
            container, stream, header, max_duration_s, max_input_samples, keep_samples
        )
    finally:
        container.close()


def _read_header(container: av.container.InputContainer) -> tuple[AudioHeader, av.AudioStream]:
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
    header = AudioHeader(
        format=SUPPORTED_CONTAINERS[demuxer],
        codec=stream.codec_context.name,
        sample_rate=rate,
        channels=max(1, stream.channels),
        duration_s=_declared_duration(container, stream),
    )
    return header, stream


def _refuse_declared(
    header: AudioHeader, max_duration_s: float, max_input_samples: int | None
) -> None:
    declared = header.duration_s
    if declared is not None and declared > max_duration_s:
        raise AudioRejected(
            "audio_too_long",
            f"The recording lasts {declared:.1f} s; at most {max_duration_s:.0f} s is accepted.",
            measured=round(declared, 3),
            threshold=max_duration_s,
        )
    samples = header.input_samples
    if max_input_samples is not None and samples is not None and samples > max_input_samples:
        raise _too_costly(samples, max_input_samples, header.sample_rate, header.channels)


def _too_costly(
    samples: int, limit: int, rate: int, channels: int, *, at_least: bool = False
) -> AudioRejected:
    return AudioRejected(
        "audio_too_costly",
        f"The recording holds {'at least ' if at_least else ''}{samples} samples across its "
        f"{channels} channel(s) at {rate} Hz; "
        f"at most {limit} are accepted, {limit / (rate * channels):.1f} s at this rate and "
        "channel count.",
        measured=float(samples),
        threshold=float(limit),
    )


def _sample_rate(stream: av.AudioStream) -> int:
    # A header with nonsense in it (zero-bit samples, say) leaves PyAV without a rate, and
    # asking for it raises instead of answering 0.
    try:
        return int(stream.rate or stream.codec_context.sample_rate or 0)
    except (AttributeError, ValueError, OverflowError):
        return 0


def _clipped_samples(frame: av.AudioFrame) -> int:
    """Samples at full scale in the frame as decoded, before any resampling smooths them."""
    block = frame.to_ndarray()
    if np.issubdtype(block.dtype, np.integer):
        info = np.iinfo(block.dtype.type)  # type: ignore[type-var]
        centre = (int(info.max) + 1) // 2 if info.min == 0 else 0
        level = np.abs(block.astype(np.float64) - centre) / (int(info.max) - centre)
    else:
        level = np.abs(block)
    return int(np.count_nonzero(level >= CLIPPING_LEVEL))


def _decode_stream(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    header: AudioHeader,
    max_duration_s: float,
    max_input_samples: int | None,
    keep_samples: bool,
) -> DecodedAudio:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=TARGET_SAMPLE_RATE)
    max_samples = int((max_duration_s + 1.0) * TARGET_SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    decoded = 0
    clipped = 0
    consumed = 0  # input samples, across channels, as the frames come (not as declared)
    try:
        for frame in container.decode(stream):
            channels = max(1, frame.layout.nb_channels)
            consumed += frame.samples * channels
            if max_input_samples is not None and consumed > max_input_samples:
                # Counted before the frame is converted or resampled: nothing past the cap
                # costs more than decoding one frame.
                rate = frame.sample_rate or header.sample_rate
                raise _too_costly(consumed, max_input_samples, rate, channels, at_least=True)
            clipped += _clipped_samples(frame)
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
        format=header.format,
        codec=header.codec,
        original_sample_rate=header.sample_rate,
        channels=header.channels,
        duration_s=decoded / TARGET_SAMPLE_RATE,
        samples=mono,
        clipped_fraction=clipped / max(1, consumed),
    )
