"""Voice activity detection with Silero VAD (its weights ship in the pip wheel)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class SpeechRegion:
    start: int  # sample index at 16 kHz
    end: int

    @property
    def duration_s(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


class SileroVad:
    model_id = "silero-vad"

    def __init__(self) -> None:
        from silero_vad import load_silero_vad

        self._model = load_silero_vad()
        # The model carries recurrent state between chunks: one caller at a time.
        self._lock = threading.Lock()

    def speech_regions(
        self, samples: np.ndarray, *, min_silence_ms: int = 100, pad_ms: int = 30
    ) -> list[SpeechRegion]:
        from silero_vad import get_speech_timestamps

        if samples.size < 512:
            return []
        with self._lock, torch.inference_mode():
            stamps = get_speech_timestamps(
                torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)),
                self._model,
                sampling_rate=SAMPLE_RATE,
                min_silence_duration_ms=min_silence_ms,
                speech_pad_ms=pad_ms,
            )
        return [SpeechRegion(int(s["start"]), int(s["end"])) for s in stamps]


@cache
def get_vad() -> SileroVad:
    return SileroVad()


def speech_only(samples: np.ndarray, regions: list[SpeechRegion]) -> np.ndarray:
    if not regions:
        return samples[:0]
    return np.concatenate([samples[r.start : r.end] for r in regions])
