"""Streaming diarization: speech turns decided as audio arrives, each labelled once decided.

A turn ends after ``end_of_turn_ms`` of silence (Silero VAD, one model state per session) or
when it reaches ``max_turn_s``. Its embedding is matched against the tenant's enrolled
voiceprints; a voice that matches none joins the session's closest earlier voice or becomes
the next ``spk_N``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np
import torch
from silero_vad import VADIterator

from diarization.engine import MIN_EMBED_S
from voice.engines import EmbeddingEngine
from voice.gallery import EnrolledGallery

SAMPLE_RATE = 16_000
VAD_CHUNK = 512  # samples Silero takes at 16 kHz


class StreamError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Delta:
    start: float
    end: float
    speaker_label: str | None
    display_name: str | None = None

    def message(self) -> dict[str, object]:
        out: dict[str, object] = {
            "type": "delta",
            "start": self.start,
            "end": self.end,
            "text": "",
        }
        if self.speaker_label is not None:
            out["speaker_label"] = self.speaker_label
        if self.display_name:
            out["display_name"] = self.display_name
        return out


@dataclass(frozen=True)
class StreamSettings:
    end_of_turn_ms: int
    max_turn_s: float
    cluster_threshold: float
    threshold: float
    min_label_s: float


class PcmDecoder:
    """Turns the client's binary frames into 16 kHz mono float samples.

    ``audio/wav``: a RIFF header (PCM 16-bit or float 32-bit, any rate and channel count)
    followed by the data; raw PCM (``audio/pcm``, ``audio/l16``): 16-bit little-endian mono at
    16 kHz.
    """

    def __init__(self, media_type: str):
        kind, _, params = media_type.partition(";")
        kind = kind.strip().lower()
        if kind in ("audio/wav", "audio/x-wav", "audio/wave"):
            self._header: bytearray | None = bytearray()
        elif kind in ("audio/pcm", "audio/l16", "audio/raw"):
            rate = _param(params, "rate")
            if rate not in (None, str(SAMPLE_RATE)):
                raise StreamError(
                    "unsupported_media_type", "Raw PCM must be 16-bit mono at 16000 Hz."
                )
            self._header = None
        else:
            raise StreamError(
                "unsupported_media_type",
                f"media_type {media_type!r} is not audio/wav or raw 16 kHz PCM (audio/pcm).",
            )
        self._rate, self._channels, self._width, self._float = SAMPLE_RATE, 1, 2, False
        # RFC 3551: L16 is network byte order; audio/pcm and WAV data are little-endian.
        self._int16 = ">i2" if kind == "audio/l16" else "<i2"
        self._rest = b""
        self._resampler: av.AudioResampler | None = None

    def decode(self, data: bytes) -> np.ndarray:
        if self._header is not None:
            self._header.extend(data)
            parsed = _parse_wav_header(bytes(self._header))
            if parsed is None:
                if len(self._header) > 1 << 16:
                    raise StreamError("malformed_audio", "No WAV data chunk in the first 64 KiB.")
                return np.zeros(0, dtype=np.float32)
            (self._rate, self._channels, self._width, self._float), offset = parsed
            data = bytes(self._header[offset:])
            self._header = None
        frame = self._width * self._channels
        data = self._rest + data
        usable = len(data) - len(data) % frame
        self._rest = data[usable:]
        if not usable:
            return np.zeros(0, dtype=np.float32)
        if self._float:
            samples = np.frombuffer(data[:usable], dtype="<f4").astype(np.float32)
        else:
            samples = np.frombuffer(data[:usable], dtype=self._int16).astype(np.float32) / 32768.0
        samples = samples.reshape(-1, self._channels).mean(axis=1).astype(np.float32)
        if self._rate == SAMPLE_RATE:
            return samples
        return self._resample(samples)

    def _resample(self, samples: np.ndarray | None) -> np.ndarray:
        # One resampler for the whole stream: its filter state spans the client's frames, so
        # the output does not depend on where the client cut them.
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        frame = None
        if samples is not None:
            frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
            frame.sample_rate = self._rate
        out = [f.to_ndarray()[0] for f in self._resampler.resample(frame)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def finish(self) -> np.ndarray:
        """What the resampler still holds once the client has sent everything."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        return self._resample(None)


def _param(params: str, name: str) -> str | None:
    for item in params.split(";"):
        key, _, value = item.partition("=")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _parse_wav_header(data: bytes) -> tuple[tuple[int, int, int, bool], int] | None:
    if len(data) < 12:
        return None
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise StreamError("malformed_audio", "The stream does not start with a RIFF/WAVE header.")
    offset, fmt = 12, None
    while offset + 8 <= len(data):
        chunk = data[offset : offset + 4]
        size = struct.unpack("<I", data[offset + 4 : offset + 8])[0]
        body = offset + 8
        if chunk == b"data":
            if fmt is None:
                raise StreamError("malformed_audio", "The WAV data chunk comes before its format.")
            return fmt, body
        if chunk == b"fmt ":
            if body + max(16, size) > len(data):
                return None
            tag, channels, rate = struct.unpack("<HHI", data[body : body + 8])
            bits = struct.unpack("<H", data[body + 14 : body + 16])[0]
            if tag == 0xFFFE and body + 26 <= len(data):  # WAVE_FORMAT_EXTENSIBLE
                tag = struct.unpack("<H", data[body + 24 : body + 26])[0]
            if not (tag == 1 and bits == 16) and not (tag == 3 and bits == 32):
                raise StreamError(
                    "unsupported_media_type", "WAV streams must be 16-bit PCM or 32-bit float."
                )
            if not channels or not 4000 <= rate <= 192_000:
                raise StreamError("malformed_audio", f"Implausible WAV format ({rate} Hz).")
            fmt = (rate, channels, bits // 8, tag == 3)
        offset = body + size + (size % 2)
    return None


class StreamDiarizer:
    """One session's state: the VAD, the audio of the open turn, the session's voices."""

    def __init__(
        self,
        engine: EmbeddingEngine,
        vad_model: torch.nn.Module,
        settings: StreamSettings,
        *,
        gallery: EnrolledGallery | None,
        display_names: dict[str, str],
        label_speakers: bool,
        is_live: Callable[[str], bool],
    ):
        self._engine = engine
        self._settings = settings
        self._vad = VADIterator(
            vad_model, sampling_rate=SAMPLE_RATE, min_silence_duration_ms=settings.end_of_turn_ms
        )
        self._gallery = gallery
        self._names = display_names
        self._label = label_speakers
        self._is_live = is_live
        self._pending = np.zeros(0, dtype=np.float32)
        self._audio = np.zeros(0, dtype=np.float32)
        self._origin = 0  # absolute sample index of self._audio[0]
        self._position = 0  # samples given to the VAD so far
        self._turn_start: int | None = None
        self._received = 0  # samples the client sent (the VAD's last chunk is padded)
        self._voices: list[np.ndarray] = []
        self.matched: set[str] = set()

    @property
    def received_s(self) -> float:
        return self._received / SAMPLE_RATE

    def feed(self, samples: np.ndarray) -> list[Delta]:
        self._received += len(samples)
        self._pending = np.concatenate([self._pending, samples.astype(np.float32)])
        deltas: list[Delta] = []
        usable = len(self._pending) - len(self._pending) % VAD_CHUNK
        # Appended once per frame, not per VAD chunk: the buffer copy stays linear.
        self._audio = np.concatenate([self._audio, self._pending[:usable]])
        for offset in range(0, usable, VAD_CHUNK):
            deltas.extend(self._step(self._pending[offset : offset + VAD_CHUNK]))
        self._pending = self._pending[usable:]
        self._trim()
        return deltas

    def flush(self) -> list[Delta]:
        """Ends the stream: the open turn, if any, is decided now."""
        deltas: list[Delta] = []
        if len(self._pending):
            chunk = np.zeros(VAD_CHUNK, dtype=np.float32)
            chunk[: len(self._pending)] = self._pending
            self._pending = np.zeros(0, dtype=np.float32)
            self._audio = np.concatenate([self._audio, chunk])
            deltas.extend(self._step(chunk))
        if self._turn_start is not None:
            deltas.extend(self._decide(self._turn_start, self._received))
            self._turn_start = None
        return deltas

    def _step(self, chunk: np.ndarray) -> list[Delta]:
        """One VAD chunk, already appended to the buffer."""
        self._position += len(chunk)
        with torch.inference_mode():
            event = self._vad(torch.from_numpy(chunk))
        deltas = []
        if event and "start" in event:
            self._turn_start = max(int(event["start"]), self._origin)
        elif event and "end" in event and self._turn_start is not None:
            deltas.extend(self._decide(self._turn_start, int(event["end"])))
            self._turn_start = None
        elif (
            self._turn_start is not None
            and self._position - self._turn_start >= self._settings.max_turn_s * SAMPLE_RATE
        ):
            deltas.extend(self._decide(self._turn_start, self._position))
            self._turn_start = self._position
        return deltas

    def _trim(self) -> None:
        # Keep the open turn and a little before it (the VAD pads turn starts back in time).
        keep_from = self._position - SAMPLE_RATE
        if self._turn_start is not None:
            keep_from = min(keep_from, self._turn_start)
        drop = max(0, keep_from - self._origin)
        if drop:
            self._audio = self._audio[drop:]
            self._origin += drop

    def _decide(self, start: int, end: int) -> list[Delta]:
        """The delta of a decided turn; none for a turn with no audio the client sent."""
        end = min(end, self._position, self._received)
        if end <= start:
            return []
        audio = self._audio[max(0, start - self._origin) : max(0, end - self._origin)]
        label, name = None, None
        duration = len(audio) / SAMPLE_RATE
        if self._label and duration >= MIN_EMBED_S:
            vector, _ = self._engine.voiceprint(audio)
            if (
                self._gallery is not None
                and len(self._gallery)
                and (duration >= self._settings.min_label_s)
            ):
                best, score, _ = self._gallery.top_two(vector[None])[0]
                speaker_id = self._gallery.speaker_ids[best]
                if score >= self._settings.threshold and self._is_live(speaker_id):
                    label, name = speaker_id, self._names.get(speaker_id)
                    self.matched.add(speaker_id)
            if label is None:
                label = self._voice_of(vector)
        return [Delta(round(start / SAMPLE_RATE, 3), round(end / SAMPLE_RATE, 3), label, name)]

    def _voice_of(self, vector: np.ndarray) -> str:
        if self._voices:
            centroids = np.stack([v / np.linalg.norm(v) for v in self._voices])
            scores = centroids @ vector
            best = int(np.argmax(scores))
            if scores[best] >= self._settings.cluster_threshold:
                self._voices[best] = self._voices[best] + vector
                return f"spk_{best}"
        self._voices.append(vector.copy())
        return f"spk_{len(self._voices) - 1}"
