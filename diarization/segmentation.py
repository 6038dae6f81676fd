"""Where the speech is, and where voices overlap, for a batch job.

The offline default is Silero VAD (its weights ship in the pip wheel); it finds speech but
cannot tell overlap. With ``DIARIZE_SEGMENTATION_MODEL`` set to a pyannote.audio
segmentation checkpoint (a local path, or a Hugging Face id with ``HF_TOKEN``), the model's
frame-wise speaker activities give both: speech where at least one speaker is active,
overlap where two or more are.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from django.conf import settings
from pyannote.core import SlidingWindowFeature

from voice.engines import SAMPLE_RATE, EngineUnavailable
from voice.vad import get_vad

Regions = list[tuple[int, int]]


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


def _runs(mask: np.ndarray, starts: np.ndarray, limit: int) -> Regions:
    out: Regions = []
    index = 0
    while index < len(mask):
        if not mask[index]:
            index += 1
            continue
        end = index
        while end < len(mask) and mask[end]:
            end += 1
        first = max(0, int(starts[index] * SAMPLE_RATE))
        last = min(limit, int(starts[end] * SAMPLE_RATE))
        if last > first:
            out.append((first, last))
        index = end
    return out


@cache
def get_speech_detector() -> SpeechDetector:
    if settings.DIARIZE_SEGMENTATION_MODEL:
        return PyannoteSegmentation(settings.DIARIZE_SEGMENTATION_MODEL, settings.HF_TOKEN)
    return SileroDetector(settings.DIARIZE_VAD_PAD_MS)
