"""Streaming diarization over a rolling buffer: who speaks, decided as the audio arrives.

Silero VAD (one model state per session; ``end_of_turn_ms`` of silence ends speech) says
where the speech is. Every ``step_s`` of audio the last seconds are scored again by the batch
engine's scoring path (``diarization.scoring``): 1.5 s windows every 0.25 s against the
session's voices (each enrolled voiceprint, blended with how the session has heard that
speaker once it has; the session's ``spk_N``; a voice not heard yet), one voice per frame by
Viterbi with a penalty per change. Speech that has ended is decided (a delta) at the next
step, and open speech once it is ``max_latency_s - step_s`` old, so no delta comes later than
``max_latency_s`` after the audio it covers; a change of voice inside the decided audio splits
it into one delta per voice.

Each delta's label is judged on its stretch's own evidence (``scoring.attribute``), against the
voiceprints as the frames score them (blended with the session's audio of a speaker once it
has heard them). It names an enrolled speaker when the evidence passes the turn rules and the
voice is identified, as a batch cluster is: the stretch reaches the identification threshold
on its own, or it is the voice the session already knows as that speaker (its frames chose
that speaker's row, or it sounds like the session's audio of them). Otherwise it gets a
session voice ``spk_N`` (the closest earlier one, or a new one founded on enough speech), or
none. A session voice is found to be an enrolled speaker once its centroid reaches the
identification threshold, or when a stretch reaching the threshold for a speaker sounds like
it and the voice sounds like that speaker as the session has heard them, if it has (the
voice was founded on that speaker's weaker words). A turn that carries on a ``spk_N`` is
judged again on its longer stretch at each step, so it is named from the step its speech
confirms the speaker. Speech that itself scores like an enrolled speaker is never added to a
session voice, so a stranger's voice cannot drift towards someone enrolled. A delta, once
sent, is never revised.

With an overlap detector (the bundled segmentation model), each step it also hears the last
10 s; where two voices speak at once in the decided audio, a second delta covers the same
time with the label of the other voice's turn it continues (``continues_turn``), as in batch.
That turn may be decided a step later; the second delta then waits for it while it can still
come within ``max_latency_s``.
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
    CONTINUED_WITHIN_S,
    FRAME_S,
    MIN_EMBED_S,
    WINDOW_S,
    Attribution,
    Reason,
    ScoringRules,
    attribute,
    frame_count,
    frame_scores,
    normalised_mean,
    smooth_path,
    window_spans,
)
from diarization.segmentation import BundledSegmentation
from voice.engines import EmbeddingEngine
from voice.gallery import EnrolledGallery

SAMPLE_RATE = 16_000
VAD_CHUNK = 512  # samples Silero takes at 16 kHz
# The shortest stretch a new session voice (spk_N) is founded on.
NEW_SESSION_VOICE_S = 1.2
# A stretch this close to how the session has heard an enrolled speaker is that speaker's
# voice (a stretch against a centroid of many: lower than the session voices' threshold).
HEARD_VOICE_SCORE = 0.70
# The speech a session voice holds before it may be found to be an enrolled speaker.
IDENTIFY_VOICE_S = 3.0
# The audio before "now" the overlap detector hears at each step (its chunks are 10 s).
OVERLAP_CONTEXT_S = 10.0


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
    # How far under the session's own audio of an enrolled speaker a session voice may score
    # and still be that speaker (as two batch clusters sharing one enrolled id).
    shared_match_margin: float = 0.05
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
        overlap: BundledSegmentation | None = None,
    ):
        self._engine = engine
        self._overlap = overlap if label_speakers else None
        # Per model frame of the overlap detector from ``_heard_from`` on: the summed count
        # of voices heard, and how many steps heard it.
        self._heard_from = 0
        self._speaking = np.zeros((0, 2), dtype=np.float32)
        chunk_frames = int(OVERLAP_CONTEXT_S * SAMPLE_RATE) // BundledSegmentation.FRAME_STEP + 1
        self._taper = np.hanning(chunk_frames + 2)[1:-1].astype(np.float32)
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
        self._voice_s: list[float] = []  # seconds of speech behind each session voice
        # Session voices found to be an enrolled speaker once they had enough speech.
        self._voice_speaker: dict[int, str] = {}
        # Enrolled speakers as heard in this session: sums of their stretches' evidence.
        self._enrolled_voices: dict[str, np.ndarray] = {}
        self._gallery_row = (
            {s: i for i, s in enumerate(self._gallery.speaker_ids)} if self._gallery else {}
        )
        self._known: EnrolledGallery | None = None  # the gallery as the session knows it
        # The last delta sent: where it ended, the frames' voice, the delta.
        self._last: tuple[int, int, Delta] | None = None
        # Labelled deltas of the last seconds: the turns overlapped speech may continue.
        self._recent: list[Delta] = []
        # Overlapped speech waiting for the turn of its second voice: (start, end, the label
        # of its first voice), in seconds.
        self._open_overlap: list[tuple[float, float, str | None]] = []
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
        # The VAD takes whole chunks, so the audio it has seen trails the client's by under
        # one: the step is due at the chunk that ends within one of it, not a piece later.
        if self._position + VAD_CHUNK <= self._next_step:
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
        if final or self._speech_start is None:
            ready = now
        else:
            # Speech that has ended is decided whole, whatever is being said since.
            ended = max((e for _, e in self._speech), default=0)
            ready = max(self._decided, now - self._hold, min(ended, self._speech_start))
        deltas: list[Delta] = []
        if regions and ready > self._decided:
            deltas = self._label_stretches(regions, now, ready)
        self._decided = max(self._decided, ready)
        # Decided speech stays in the list while it can be the next step's left context.
        self._speech = [(s, e) for s, e in self._speech if e > ready]
        self._trim()
        return deltas

    def _label_stretches(self, regions: list[tuple[int, int]], now: int, ready: int) -> list[Delta]:
        first = regions[0][0]
        frames = frame_count(now - first)
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
        if self._overlap is not None:
            deltas += self._second_voices(deltas, now, ready)
        return deltas

    def _second_voices(self, deltas: list[Delta], now: int, ready: int) -> list[Delta]:
        """Deltas for the second voice of overlapped speech just decided, as in batch
        (``diarization.engine``): overlapped audio is never matched; it carries the label of
        the other voice's turn it continues, one that ends or starts within
        ``CONTINUED_WITHIN_S`` of it. When that turn has not been decided yet, the overlap
        waits for it while a delta for it can still come within the latency budget."""
        now_s = now / SAMPLE_RATE
        out = []
        waiting = []
        budget = self._settings.max_latency_s
        for start, end, first_label in self._open_overlap:
            if now_s - end > budget:
                continue  # a delta for it now would come later than the budget allows
            other = self._continued(start, end, first_label, deltas, after_only=True)
            if other is not None:
                out.extend(self._second_voice(start, end, other))
            elif now_s - end + self._settings.step_s <= budget:
                waiting.append((start, end, first_label))
        for start, end in self._overlapped(now, ready):
            for delta in deltas:
                low, high = max(start, delta.start), min(end, delta.end)
                if high <= low:
                    continue
                other = self._continued(low, high, delta.speaker_label, deltas)
                if other is not None:
                    out.extend(self._second_voice(low, high, other))
                else:
                    waiting.append((low, high, delta.speaker_label))
        self._open_overlap = waiting
        horizon = now_s - OVERLAP_CONTEXT_S
        self._recent = [d for d in self._recent + deltas if d.speaker_label and d.end > horizon]
        return out

    def _overlapped(self, now: int, ready: int) -> list[tuple[float, float]]:
        """Overlapped speech in the audio being decided (from ``self._decided`` to ``ready``),
        in seconds.

        Each step the model hears the last ``OVERLAP_CONTEXT_S`` up to now; how many speak in
        each of its frames is averaged over the steps that heard it, as batch averages it
        over chunks, so a frame is decided on several hearings."""
        assert self._overlap is not None
        step = self._overlap.FRAME_STEP
        tail = max(self._origin, now - int(OVERLAP_CONTEXT_S * SAMPLE_RATE))
        counts = self._overlap.speaker_counts(self._audio[tail - self._origin : now - self._origin])
        first = int(round(tail / step))
        end = first + len(counts)
        if end > self._heard_from + len(self._speaking):
            grow = end - self._heard_from - len(self._speaking)
            self._speaking = np.concatenate([self._speaking, np.zeros((grow, 2), np.float32)])
        # As diart aggregates chunks: a frame near a chunk's edge, heard with little context
        # on one side, weighs less (a Hann taper over the model's 10 s).
        weight = self._taper[: len(counts)]
        self._speaking[first - self._heard_from : end - self._heard_from] += np.stack(
            [counts * weight, weight], axis=1
        )
        low = max(0, self._overlap.frame_at(self._decided) - self._heard_from)
        high = max(
            low,
            min(len(self._speaking), self._overlap.frame_at(ready - 1) + 1 - self._heard_from),
        )
        heard = self._speaking[low:high]
        two = np.rint(heard[:, 0] / np.maximum(heard[:, 1], 1e-6)) >= 2
        found = self._overlap.sample_ranges(
            two, self._heard_from + low, start=self._decided, limit=ready
        )
        return [(round(a / SAMPLE_RATE, 3), round(b / SAMPLE_RATE, 3)) for a, b in found]

    def _continued(
        self,
        start: float,
        end: float,
        first_label: str | None,
        deltas: list[Delta],
        *,
        after_only: bool = False,
    ) -> str | None:
        """The label of the nearest labelled turn of another voice within
        ``CONTINUED_WITHIN_S`` of the overlapped speech (``after_only``: one after it)."""
        best: tuple[float, str] | None = None
        for delta in ([] if after_only else self._recent) + deltas:
            if delta.speaker_label is None or delta.speaker_label == first_label:
                continue
            if after_only and delta.start < end - CONTINUED_WITHIN_S:
                continue
            gap = max(delta.start - end, start - delta.end, 0.0)
            if gap <= CONTINUED_WITHIN_S and (best is None or gap < best[0]):
                best = (gap, delta.speaker_label)
        return None if best is None else best[1]

    def _second_voice(self, start: float, end: float, label: str) -> list[Delta]:
        if not label.startswith("spk_") and not self._is_live(label):
            return []  # erased since its turn was sent
        return [Delta(start, end, label, self._names.get(label), str(Reason.CONTINUES_TURN))]

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
        """The enrolled speakers as this session knows them, then the session's spk_N (the
        last column, added by the caller, is a voice not heard yet)."""
        rows = []
        if self._label and (known := self._session_gallery()) is not None:
            rows = list(known.matrix)
        rows += [normalised_mean(v[None]) for v in self._voices]
        if not rows:
            return np.zeros((0, self._engine.dimension), dtype=np.float32)
        return np.stack(rows)

    def _session_gallery(self) -> EnrolledGallery | None:
        """The enrolled voiceprints, each one blended with the session's audio of its speaker
        once the session has heard them (same microphone, same room, which the enrollment
        recording is not): what frames and stretches are scored against. Built again only
        after the session has heard more."""
        if self._gallery is None:
            return None
        if self._known is None:
            matrix = self._gallery.matrix.copy()
            for speaker_id, heard in self._enrolled_voices.items():
                row = self._gallery_row[speaker_id]
                matrix[row] = normalised_mean(np.stack([matrix[row], normalised_mean(heard[None])]))
            self._known = EnrolledGallery(self._gallery.speaker_ids, matrix)
        return self._known

    def _hear(self, speaker_id: str, vector: np.ndarray) -> None:
        """Adds a stretch's evidence (or a session voice) to how the session has heard an
        enrolled speaker."""
        heard = self._enrolled_voices.get(speaker_id)
        self._enrolled_voices[speaker_id] = vector if heard is None else heard + vector
        self._known = None

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
            # The same voice carries on past the last delta: its label stands, unless a voice
            # nobody enrolled turns out, on the longer stretch, to be an enrolled speaker.
            delta = self._named_on_more_evidence(whole, length, spans, embeddings)
            if delta is None:
                delta = last[2]
            self._last = (end, voice, delta)
            return replace(delta, start=delta_start, end=delta_end)
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
        enrolled = len(self._gallery) if self._gallery is not None else 0
        candidate = self._candidate(voice, evidence, enrolled)
        decided = self._attribute(evidence, candidate)
        if decided.speaker_id is not None and length >= self._settings.min_label_s:
            speaker_id = decided.speaker_id
            # Frames that chose the speaker's row once it holds the session's audio of them
            # are that voice, as a batch turn of an identified cluster is.
            on_heard_row = 0 <= voice < enrolled and self._heard(speaker_id) is not None
            recognised = on_heard_row or self._voice_identified(speaker_id, evidence, decided.score)
            if recognised and self._is_live(speaker_id):
                return self._enrolled_delta(delta_start, delta_end, speaker_id, evidence)
        if (
            candidate is not None
            and decided.closer_voice is not None
            and self._founded_on_weaker(decided.closer_voice, candidate, decided.score)
        ):
            # The session voice it sounds like is this enrolled speaker, founded on words of
            # theirs that scored under the rules.
            self._promote(decided.closer_voice, candidate)
            if length >= self._settings.min_label_s and self._is_live(candidate):
                return self._enrolled_delta(delta_start, delta_end, candidate, evidence)
        if decided.reason == Reason.AMBIGUOUS_ENROLLED:
            # Two enrolled voices fit about as well: no one's, and no new session voice
            # either (one made of two people would draw both in later).
            return Delta(delta_start, delta_end, None, reason=str(decided.reason))
        reason = decided.reason if decided.speaker_id is None else Reason.UNENROLLED_VOICE
        session_voice = voice - enrolled
        if decided.closer_voice is not None:
            session_voice = decided.closer_voice
        # Speech that scores like an enrolled speaker is labelled with the session voice but
        # not added to it: a voice nobody enrolled must not drift towards someone enrolled.
        known = self._voice_of(
            evidence, session_voice, length, grow=not self._matches_live_speaker(evidence)
        )
        if known is None:
            if reason == Reason.UNENROLLED_VOICE:
                reason = Reason.TOO_SHORT  # too few words to found a voice on
            return Delta(delta_start, delta_end, None, reason=str(reason))
        identified = self._identify_voice(known)
        if identified is not None and length >= self._settings.min_label_s:
            decided = self._attribute(evidence, identified)
            if decided.speaker_id == identified and self._is_live(identified):
                return self._enrolled_delta(delta_start, delta_end, identified, evidence)
        return Delta(delta_start, delta_end, f"spk_{known}", reason=str(reason))

    def _named_on_more_evidence(
        self,
        whole: tuple[int, int],
        length: float,
        spans: list[tuple[int, int]],
        embeddings: np.ndarray,
    ) -> Delta | None:
        """The enrolled delta of a stretch that carries on a ``spk_N``, when the stretch so far
        passes the rules for the gallery's best (its first words may have scored under them);
        None otherwise. The session voice is not grown again by it."""
        last = self._last
        if (
            last is None
            or self._gallery is None
            or not (last[2].speaker_label or "").startswith("spk_")
            or length < self._settings.min_label_s
        ):
            return None
        evidence = self._evidence(whole, spans, embeddings)
        best, _ = self._gallery_best(self._gallery, evidence)
        decided = self._attribute(evidence, best)
        if decided.closer_voice is not None and self._founded_on_weaker(
            decided.closer_voice, best, decided.score
        ):
            self._promote(decided.closer_voice, best)
        elif decided.speaker_id is None or not self._voice_identified(
            best, evidence, decided.score
        ):
            return None
        if not self._is_live(best):
            return None
        return self._enrolled_delta(0.0, 0.0, best, evidence)

    def _candidate(self, voice: int, evidence: np.ndarray, enrolled: int) -> str | None:
        """The enrolled speaker a stretch may be: the frames' enrolled voice, the enrolled
        speaker its session voice turned out to be, else the gallery's best (weighed on the
        same rules, so a returning enrolled speaker is named)."""
        if self._gallery is None:
            return None
        if 0 <= voice < enrolled:
            return self._gallery.speaker_ids[voice]
        if voice - enrolled in self._voice_speaker:
            return self._voice_speaker[voice - enrolled]
        return self._gallery_best(self._gallery, evidence)[0]

    @staticmethod
    def _gallery_best(gallery: EnrolledGallery, evidence: np.ndarray) -> tuple[str, float]:
        """The enrolled speaker the evidence scores best against, and that score."""
        scores = gallery.scores(evidence[None])[0]
        best = int(np.argmax(scores))
        return gallery.speaker_ids[best], float(scores[best])

    def _attribute(self, evidence: np.ndarray, candidate: str | None) -> Attribution:
        """``scoring.attribute`` against the enrolled speakers as the session knows them and the
        session voices that are nobody enrolled (``closer_voice`` is a session voice's index)."""
        open_voices = [i for i in range(len(self._voices)) if i not in self._voice_speaker]
        decided = attribute(
            evidence,
            self._session_gallery(),
            candidate,
            self._heard(candidate),
            np.stack([normalised_mean(self._voices[i][None]) for i in open_voices])
            if open_voices
            else np.zeros((0, len(evidence)), np.float32),
            self._settings.rules,
        )
        if decided.closer_voice is None:
            return decided
        return replace(decided, closer_voice=open_voices[decided.closer_voice])

    def _enrolled_delta(
        self, delta_start: float, delta_end: float, speaker_id: str, evidence: np.ndarray
    ) -> Delta:
        self.matched.add(speaker_id)
        self._hear(speaker_id, evidence)
        return Delta(
            delta_start,
            delta_end,
            speaker_id,
            self._names.get(speaker_id),
            str(Reason.ENROLLED_MATCH),
        )

    def _voice_identified(self, speaker_id: str, evidence: np.ndarray, score: float | None) -> bool:
        """The identification threshold applies to the voice, as in batch to a cluster's
        centroid: met by the stretch on its own, or by the stretch being the voice this
        session already knows as that speaker."""
        if score is not None and score >= self._settings.threshold:
            return True
        heard = self._heard(speaker_id)
        return heard is not None and float(heard @ evidence) >= HEARD_VOICE_SCORE

    def _identify_voice(self, index: int) -> str | None:
        """The enrolled speaker a session voice is, once it holds ``IDENTIFY_VOICE_S`` of speech
        whose centroid meets the identification threshold, clear of the second best (as a
        batch cluster is identified); its earlier deltas stay as they were sent."""
        if index in self._voice_speaker:
            return self._voice_speaker[index]
        if self._gallery is None or self._voice_s[index] < IDENTIFY_VOICE_S:
            return None
        centroid = normalised_mean(self._voices[index][None])
        scores = self._gallery.scores(centroid[None])[0]
        order = np.argsort(scores)[::-1]
        best = float(scores[order[0]])
        second = float(scores[order[1]]) if len(order) > 1 else None
        speaker_id = self._gallery.speaker_ids[int(order[0])]
        if best < self._settings.threshold or (
            second is not None and best - second < self._settings.rules.enrolled_margin
        ):
            return None
        heard = self._heard(speaker_id)
        if heard is not None and best < float(
            self._gallery.scores(heard[None])[0][order[0]] - self._settings.shared_match_margin
        ):
            # Far below how the session has heard that speaker: a similar-sounding other
            # person (batch's shared match margin).
            return None
        self._promote(index, speaker_id)
        return speaker_id

    def _matches_live_speaker(self, evidence: np.ndarray) -> bool:
        """Whether the evidence meets the identification threshold against an enrolled speaker
        (one erased since the session began is nobody enrolled)."""
        if self._gallery is None:
            return False
        speaker_id, score = self._gallery_best(self._gallery, evidence)
        return score >= self._settings.threshold and self._is_live(speaker_id)

    def _founded_on_weaker(self, index: int, speaker_id: str, score: float | None) -> bool:
        """Whether session voice ``index``, which a stretch scoring at the identification
        threshold for an enrolled speaker sounds like, is that speaker: its centroid's best
        enrolled match is them, at the turn threshold, and, once the session has heard them,
        it sounds like them as heard (it was founded on their weaker words, not a stranger's)."""
        if (
            self._gallery is None
            or score is None
            or score < self._settings.threshold
            or not self._is_live(speaker_id)
        ):
            return False
        centroid = normalised_mean(self._voices[index][None])
        heard = self._heard(speaker_id)
        if heard is not None and float(heard @ centroid) < HEARD_VOICE_SCORE:
            return False
        scores = self._gallery.scores(centroid[None])[0]
        best = int(np.argmax(scores))
        return (
            self._gallery.speaker_ids[best] == speaker_id
            and float(scores[best]) >= self._settings.rules.turn_threshold
        )

    def _promote(self, index: int, speaker_id: str) -> None:
        self._voice_speaker[index] = speaker_id
        self._hear(speaker_id, self._voices[index])

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
        # Keep a window of decided audio before the undecided (its windows' left context),
        # and, for the overlap detector, the seconds it hears.
        context = OVERLAP_CONTEXT_S if self._overlap is not None else WINDOW_S
        keep_from = self._decided - int(context * SAMPLE_RATE)
        drop = max(0, keep_from - self._origin)
        if drop:
            self._audio = self._audio[drop:]
            self._origin += drop
            if self._overlap is not None:
                keep = max(0, self._origin // self._overlap.FRAME_STEP - self._heard_from)
                self._speaking = self._speaking[keep:]
                self._heard_from += keep
            self._windows = {k: v for k, v in self._windows.items() if k[0] >= self._origin}

    def _voice_of(
        self, vector: np.ndarray, known: int, length: float, *, grow: bool = True
    ) -> int | None:
        """The session voice the frames gave (``known``), else the closest earlier one, else
        a new one when the stretch is long enough to found a voice on (none otherwise: a voice
        made of a few words would draw later turns of enrolled speakers away from them)."""
        if not 0 <= known < len(self._voices):
            known = -1
            open_voices = [i for i in range(len(self._voices)) if i not in self._voice_speaker]
            if open_voices:
                centroids = np.stack([normalised_mean(self._voices[i][None]) for i in open_voices])
                scores = centroids @ vector
                best = int(np.argmax(scores))
                if scores[best] >= self._settings.cluster_threshold:
                    known = open_voices[best]
        if known < 0:
            if length < NEW_SESSION_VOICE_S or not grow:
                return None
            self._voices.append(np.zeros_like(vector))
            self._voice_s.append(0.0)
            known = len(self._voices) - 1
        if grow:
            self._voices[known] = self._voices[known] + vector
            self._voice_s[known] += length
        return known
