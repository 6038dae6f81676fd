"""Streaming diarization over a rolling buffer: who speaks, decided as the audio arrives.

Silero VAD (one model state per session; ``end_of_turn_ms`` of silence ends speech) says
where the speech is. Every ``step_s`` of audio the last seconds are scored again by the batch
engine's scoring path (``diarization.scoring``): 1.5 s windows every 0.25 s against the
session's voices (the enrolled voiceprints, the session's ``spk_N`` and a voice not heard yet),
one voice per frame by Viterbi with a penalty per change. Audio is decided (a delta) once its
speech has ended, or when it is ``max_latency_s - step_s`` old, so no delta comes later than
``max_latency_s`` after the audio it covers; a change of voice inside the decided audio splits
it into one delta per voice. Each delta's label is judged on its own evidence
(``scoring.attribute``): the enrolled speaker only when the stretch's own audio confirms it
and the session's stretches that pointed to that speaker together reach the identification
threshold (the batch threshold of a voice's centroid), else the session's ``spk_N`` (a voice
that matches none joins the closest earlier one or becomes the next), or none for too little
speech. A delta, once sent, is never revised.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, replace

import av
import numpy as np
import torch
from silero_vad import VADIterator

from diarization.scoring import (
    FRAME_S,
    MIN_EMBED_S,
    WINDOW_S,
    Reason,
    ScoringRules,
    attribute,
    frame_scores,
    normalised_mean,
    smooth_path,
    window_spans,
)
from voice.engines import EmbeddingEngine
from voice.gallery import EnrolledGallery

SAMPLE_RATE = 16_000
VAD_CHUNK = 512  # samples Silero takes at 16 kHz
# The shortest stretch a new session voice (spk_N) is founded on.
NEW_SESSION_VOICE_S = 2.0


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
    reason: str | None = None

    def message(self) -> dict[str, object]:
        out: dict[str, object] = {
            "type": "delta",
            "start": self.start,
            "end": self.end,
            "text": "",
        }
        if self.reason is not None:
            out["reason"] = self.reason
        if self.speaker_label is not None:
            out["speaker_label"] = self.speaker_label
        if self.display_name:
            out["display_name"] = self.display_name
        return out


@dataclass(frozen=True)
class StreamSettings:
    end_of_turn_ms: int
    cluster_threshold: float
    threshold: float
    min_label_s: float
    step_s: float = 0.5
    max_latency_s: float = 2.0
    rules: ScoringRules = ScoringRules()


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
    """One session's state: the VAD, the rolling buffer, the session's voices."""

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
        self._gallery = gallery if gallery is not None and len(gallery) else None
        self._names = display_names
        self._label = label_speakers
        self._is_live = is_live
        self._pending = np.zeros(0, dtype=np.float32)
        self._audio = np.zeros(0, dtype=np.float32)
        self._origin = 0  # absolute sample index of self._audio[0]
        self._position = 0  # samples given to the VAD so far
        self._received = 0  # samples the client sent (the VAD's last chunk is padded)
        self._step = max(VAD_CHUNK, int(settings.step_s * SAMPLE_RATE))
        self._next_step = self._step
        # Audio older than this (before "now") is decided at the next step at the latest.
        self._hold = max(0, int((settings.max_latency_s - settings.step_s) * SAMPLE_RATE))
        self._speech: list[tuple[int, int]] = []  # ended speech regions not yet decided
        self._speech_start: int | None = None  # the open speech region
        self._decided = 0  # every sample before this is in a sent delta, or silence
        self._windows: dict[tuple[int, int], np.ndarray] = {}  # embeddings, reused by steps
        self._voices: list[np.ndarray] = []  # the session's spk_N: sums of their evidence
        # Per enrolled speaker, the sum of the evidence of every stretch that pointed to them.
        self._pointed: dict[str, np.ndarray] = {}
        self._voiceprints = (
            dict(zip(gallery.speaker_ids, gallery.matrix, strict=True))
            if gallery is not None
            else {}
        )
        # Enrolled speakers as heard in this session: sums of their stretches' evidence.
        self._enrolled_voices: dict[str, np.ndarray] = {}
        # The last delta sent: where it ended, the frames' voice, the delta.
        self._last: tuple[int, int, Delta] | None = None
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
            deltas.extend(self._vad_step(self._pending[offset : offset + VAD_CHUNK]))
        self._pending = self._pending[usable:]
        return deltas

    def flush(self) -> list[Delta]:
        """Ends the stream: everything not yet decided is decided now."""
        deltas: list[Delta] = []
        if len(self._pending):
            chunk = np.zeros(VAD_CHUNK, dtype=np.float32)
            chunk[: len(self._pending)] = self._pending
            self._pending = np.zeros(0, dtype=np.float32)
            self._audio = np.concatenate([self._audio, chunk])
            deltas.extend(self._vad_step(chunk))
        if self._speech_start is not None:
            self._speech.append((self._speech_start, self._position))
            self._speech_start = None
        deltas.extend(self._decide(final=True))
        return deltas

    def _vad_step(self, chunk: np.ndarray) -> list[Delta]:
        """One VAD chunk, already appended to the buffer; a scoring step every ``step_s``."""
        self._position += len(chunk)
        with torch.inference_mode():
            event = self._vad(torch.from_numpy(chunk))
        if event and "start" in event:
            self._speech_start = max(int(event["start"]), self._origin, self._decided)
        elif event and "end" in event and self._speech_start is not None:
            end = min(int(event["end"]), self._position)
            if end > self._speech_start:
                self._speech.append((self._speech_start, end))
            self._speech_start = None
        if self._position < self._next_step:
            return []
        self._next_step += self._step
        return self._decide(final=False)

    def _decide(self, *, final: bool) -> list[Delta]:
        """Scores the undecided speech and sends what is ready: speech that has ended, and
        audio about to exceed the latency budget (everything, at the end of the stream)."""
        now = min(self._position, self._received)
        # A window of decided speech before the undecided gives its first windows context.
        context = max(self._origin, self._decided - int(WINDOW_S * SAMPLE_RATE))
        regions = [(max(s, context), min(e, now)) for s, e in self._speech]
        if self._speech_start is not None:
            regions.append((max(self._speech_start, context), now))
        regions = [(s, e) for s, e in regions if e > s]
        ready = now if final or self._speech_start is None else max(self._decided, now - self._hold)
        deltas: list[Delta] = []
        if regions and ready > self._decided:
            deltas = self._label_stretches(regions, now, ready)
        self._decided = max(self._decided, ready)
        self._speech = [(max(s, ready), e) for s, e in self._speech if e > ready]
        self._trim()
        return deltas

    def _label_stretches(self, regions: list[tuple[int, int]], now: int, ready: int) -> list[Delta]:
        first = regions[0][0]
        frames = int(np.ceil((now - first) / SAMPLE_RATE / FRAME_S))
        speech = np.zeros(frames, dtype=bool)
        for start, end in regions:
            speech[
                self._frame(start, first) : max(
                    self._frame(start, first) + 1, self._frame(end, first)
                )
            ] = True
        spans = window_spans(regions)
        embeddings = self._embed(spans)
        voices = self._candidate_voices()
        path = np.full(frames, -1)
        if len(spans) and len(voices):
            similarity = np.concatenate(
                [
                    embeddings @ voices.T,
                    np.full((len(spans), 1), self._settings.rules.new_voice_score),
                ],
                axis=1,
            )
            scores, weight = frame_scores(spans, similarity, frames, origin=first)
            covered = speech & (weight > 0)
            path[covered] = smooth_path(scores[covered], self._settings.rules.change_penalty)
        deltas = []
        for start, end, voice, whole in self._stretches(path, speech, first, ready):
            deltas.append(self._delta(start, end, voice, whole, spans, embeddings))
        return deltas

    def _frame(self, sample: int, first: int) -> int:
        return int(round((sample - first) / SAMPLE_RATE / FRAME_S))

    def _embed(self, spans: list[tuple[int, int]]) -> np.ndarray:
        missing = [span for span in spans if span not in self._windows]
        if missing:
            local = [(s - self._origin, e - self._origin) for s, e in missing]
            for span, vector in zip(
                missing, self._engine.embed_spans(self._audio, local), strict=True
            ):
                self._windows[span] = vector
        if not spans:
            return np.zeros((0, self._engine.dimension), dtype=np.float32)
        return np.stack([self._windows[span] for span in spans])

    def _candidate_voices(self) -> np.ndarray:
        """The enrolled voiceprints, then the session's spk_N (the last column, added by the
        caller, is a voice not heard yet)."""
        rows = [] if self._gallery is None or not self._label else list(self._gallery.matrix)
        rows += [normalised_mean(v[None]) for v in self._voices]
        if not rows:
            return np.zeros((0, self._engine.dimension), dtype=np.float32)
        return np.stack(rows)

    def _stretches(
        self, path: np.ndarray, speech: np.ndarray, first: int, ready: int
    ) -> list[tuple[int, int, int, tuple[int, int]]]:
        """(start, end, voice, whole stretch) of every stretch of one voice that starts before
        ``ready``, cut at ``ready``; the whole stretch runs on to what is heard so far."""
        out = []
        frames = len(path)
        index = 0
        while index < frames:
            if not speech[index]:
                index += 1
                continue
            end = index
            while end < frames and speech[end] and path[end] == path[index]:
                end += 1
            whole_start = first + int(round(index * FRAME_S * SAMPLE_RATE))
            end_sample = first + int(round(end * FRAME_S * SAMPLE_RATE))
            start_sample = max(whole_start, self._decided)
            cut = min(end_sample, ready)
            if cut > start_sample:
                out.append((start_sample, cut, int(path[index]), (whole_start, end_sample)))
            index = end
        return out

    def _delta(
        self,
        start: int,
        end: int,
        voice: int,
        whole: tuple[int, int],
        spans: list[tuple[int, int]],
        embeddings: np.ndarray,
    ) -> Delta:
        """The delta of decided audio, labelled on the whole stretch's own evidence."""
        delta_start, delta_end = round(start / SAMPLE_RATE, 3), round(end / SAMPLE_RATE, 3)
        length = (whole[1] - whole[0]) / SAMPLE_RATE
        if not self._label:
            return Delta(delta_start, delta_end, None)
        last = self._last
        if (
            last is not None
            and last[2].speaker_label is not None
            and last[0] == start
            and whole[0] < start
            and last[1] == voice
        ):
            # The same voice carries on past the last delta: its label stands.
            self._last = (end, voice, last[2])
            return replace(last[2], start=delta_start, end=delta_end)
        delta = self._judge(delta_start, delta_end, voice, whole, length, spans, embeddings)
        self._last = (end, voice, delta)
        return delta

    def _judge(
        self,
        delta_start: float,
        delta_end: float,
        voice: int,
        whole: tuple[int, int],
        length: float,
        spans: list[tuple[int, int]],
        embeddings: np.ndarray,
    ) -> Delta:
        if length < MIN_EMBED_S:
            return Delta(delta_start, delta_end, None, reason=str(Reason.TOO_SHORT))
        evidence = self._evidence(whole, spans, embeddings)
        gallery = self._gallery
        enrolled = len(gallery) if gallery is not None else 0
        candidate = None
        if gallery is not None:
            # The frames' enrolled voice; for a session voice or one not heard yet, the
            # gallery's best is still weighed on the same rules, so a returning enrolled
            # speaker is named.
            best = (
                voice
                if 0 <= voice < enrolled
                else int(np.argmax(gallery.scores(evidence[None])[0]))
            )
            candidate = gallery.speaker_ids[best]
        unenrolled = (
            np.stack([normalised_mean(v[None]) for v in self._voices])
            if self._voices
            else np.zeros((0, len(evidence)), np.float32)
        )
        decided = attribute(
            evidence,
            self._gallery,
            candidate,
            self._heard(candidate),
            unenrolled,
            self._settings.rules,
        )
        if (
            decided.speaker_id is not None
            and length >= self._settings.min_label_s
            and self._voice_reaches_threshold(decided.speaker_id, evidence)
            and self._is_live(decided.speaker_id)
        ):
            speaker_id = decided.speaker_id
            self.matched.add(speaker_id)
            heard = self._enrolled_voices.get(speaker_id)
            self._enrolled_voices[speaker_id] = evidence if heard is None else heard + evidence
            return Delta(
                delta_start,
                delta_end,
                speaker_id,
                self._names.get(speaker_id),
                str(Reason.ENROLLED_MATCH),
            )
        if decided.reason == Reason.AMBIGUOUS_ENROLLED:
            # Two enrolled voices fit about as well: no one's, and no new session voice
            # either (one made of two people would draw both in later).
            return Delta(delta_start, delta_end, None, reason=str(decided.reason))
        reason = decided.reason if decided.speaker_id is None else Reason.UNENROLLED_VOICE
        session_voice = voice - enrolled
        if decided.closer_voice is not None:
            session_voice = decided.closer_voice
        label = self._voice_of(evidence, session_voice, length)
        if label is None and reason == Reason.UNENROLLED_VOICE:
            reason = Reason.TOO_SHORT  # too few words to found a voice on
        return Delta(delta_start, delta_end, label, reason=str(reason))

    def _voice_reaches_threshold(self, speaker_id: str, evidence: np.ndarray) -> bool:
        """The identification threshold applies to the voice, as in batch to a cluster's
        centroid: here every stretch of the session whose own evidence pointed to this
        enrolled speaker, this one included."""
        pointed = self._pointed.get(speaker_id)
        self._pointed[speaker_id] = evidence if pointed is None else pointed + evidence
        voice = normalised_mean(self._pointed[speaker_id][None])
        return float(voice @ self._voiceprints[speaker_id]) >= self._settings.threshold

    def _heard(self, speaker_id: str | None) -> np.ndarray | None:
        heard = self._enrolled_voices.get(speaker_id or "")
        return None if heard is None else normalised_mean(heard[None])

    def _evidence(
        self, whole: tuple[int, int], spans: list[tuple[int, int]], embeddings: np.ndarray
    ) -> np.ndarray:
        inside = [row for row, (s, e) in enumerate(spans) if s >= whole[0] and e <= whole[1]]
        if inside:
            return normalised_mean(embeddings[inside])
        audio = self._audio[max(0, whole[0] - self._origin) : max(0, whole[1] - self._origin)]
        return self._engine.embed(audio)

    def _trim(self) -> None:
        # Keep a window of decided audio before the undecided (its windows' left context).
        keep_from = self._decided - int(WINDOW_S * SAMPLE_RATE)
        drop = max(0, keep_from - self._origin)
        if drop:
            self._audio = self._audio[drop:]
            self._origin += drop
            self._windows = {k: v for k, v in self._windows.items() if k[0] >= self._origin}

    def _voice_of(self, vector: np.ndarray, known: int, length: float) -> str | None:
        """The session voice the frames gave (``known``), else the closest earlier one, else
        the next ``spk_N`` when the stretch is long enough to found a voice on (none
        otherwise: a voice made of a few words would draw later turns of enrolled speakers
        away from them)."""
        if 0 <= known < len(self._voices):
            self._voices[known] = self._voices[known] + vector
            return f"spk_{known}"
        if self._voices:
            centroids = np.stack([v / np.linalg.norm(v) for v in self._voices])
            scores = centroids @ vector
            best = int(np.argmax(scores))
            if scores[best] >= self._settings.cluster_threshold:
                self._voices[best] = self._voices[best] + vector
                return f"spk_{best}"
        if length < NEW_SESSION_VOICE_S:
            return None
        self._voices.append(vector.copy())
        return f"spk_{len(self._voices) - 1}"
