"""Speaker embedding engines.

The model is configuration (``EMBEDDING_MODEL``): ``resemblyzer`` is the offline
default (Resemblyzer's GE2E encoder, whose weights ship in its pip package); any
other value is loaded through pyannote.audio, either a local checkpoint path or
a Hugging Face model id such as ``pyannote/wespeaker-voxceleb-resnet34-LM``
(with ``HF_TOKEN``). Every embedding is stamped with the engine's model id and
version, so vectors of different models are never compared.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from functools import cache
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
import torch

SAMPLE_RATE = 16_000
VOICEPRINT_WINDOW_S = 1.6
VOICEPRINT_HOP_S = 0.5
# Windows embedded per forward pass: bounds memory on long recordings.
SPAN_BATCH = 256


class EngineUnavailable(Exception):
    """The configured embedding model cannot be loaded."""


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


class EmbeddingEngine(ABC):
    engine_name = "pyannote"
    model_id: str
    model_version: str
    dimension: int

    @abstractmethod
    def embed(self, speech: np.ndarray) -> np.ndarray:
        """One L2-normalised embedding for 16 kHz mono speech."""

    @abstractmethod
    def embed_windows(self, speech: np.ndarray, window_s: float, hop_s: float) -> np.ndarray:
        """L2-normalised embeddings of sliding windows, shape (windows, dimension)."""

    def embed_spans(self, samples: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
        """L2-normalised embeddings of the given sample ranges, shape (len(spans), dimension)."""
        if not spans:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self.embed(samples[start:end]) for start, end in spans])

    def voiceprint(self, speech: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The speaker's voiceprint (mean of window embeddings) and the windows themselves."""
        windows = self.embed_windows(speech, VOICEPRINT_WINDOW_S, VOICEPRINT_HOP_S)
        return _normalise(windows.mean(axis=0)), windows


class ResemblyzerEngine(EmbeddingEngine):
    model_id = "resemblyzer/ge2e-voice-encoder"
    dimension = 256

    def __init__(self) -> None:
        import resemblyzer
        from resemblyzer import VoiceEncoder

        self._encoder = VoiceEncoder("cpu", verbose=False)
        weights = Path(resemblyzer.__file__).parent / "pretrained.pt"
        self.model_version = f"{package_version('resemblyzer')}+{_file_digest(weights)}"

    def embed(self, speech: np.ndarray) -> np.ndarray:
        return _normalise(self._encoder.embed_utterance(speech.astype(np.float32)))

    def embed_windows(self, speech: np.ndarray, window_s: float, hop_s: float) -> np.ndarray:
        from resemblyzer.audio import wav_to_mel_spectrogram

        mel = wav_to_mel_spectrogram(speech.astype(np.float32))  # 10 ms frames
        width, hop = int(window_s * 100), max(1, int(hop_s * 100))
        if len(mel) < width:
            mel = np.pad(mel, ((0, width - len(mel)), (0, 0)))
        starts = range(0, len(mel) - width + 1, hop)
        batch = torch.from_numpy(np.stack([mel[s : s + width] for s in starts]))
        with torch.inference_mode():
            return _normalise(self._encoder(batch).numpy())

    def embed_spans(self, samples: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
        # One mel spectrogram for the whole recording, then one batched pass per block of
        # windows of one width: diarization embeds thousands of overlapping windows, and a
        # span padded to a longer neighbour's width would embed the padding too.
        from resemblyzer.audio import wav_to_mel_spectrogram

        if not spans:
            return np.zeros((0, self.dimension), dtype=np.float32)
        mel = wav_to_mel_spectrogram(samples.astype(np.float32))
        frames = []
        for start, end in spans:
            first = min(start // 160, len(mel) - 1)
            frames.append((first, min(len(mel), max(first + 1, end // 160))))
        rows_of: dict[int, list[int]] = {}
        for row, (first, stop) in enumerate(frames):
            rows_of.setdefault(stop - first, []).append(row)
        out = np.zeros((len(spans), self.dimension), dtype=np.float32)
        with torch.inference_mode():
            for rows in rows_of.values():
                for block in range(0, len(rows), SPAN_BATCH):
                    chosen = rows[block : block + SPAN_BATCH]
                    batch = np.stack([mel[slice(*frames[r])] for r in chosen])
                    out[chosen] = self._encoder(torch.from_numpy(batch)).numpy()
        return _normalise(out)


class PyannoteEngine(EmbeddingEngine):
    def __init__(self, checkpoint: str, token: str | None = None) -> None:
        # pyannote.audio refuses to import without this telemetry switch decided.
        os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
        from pyannote.audio import Inference, Model

        local = Path(checkpoint)
        try:
            model = Model.from_pretrained(checkpoint, token=token)
        except Exception as exc:  # pyannote raises many kinds; all mean "cannot load"
            raise EngineUnavailable(f"cannot load embedding model {checkpoint!r}: {exc}") from exc
        if model is None:
            raise EngineUnavailable(f"cannot load embedding model {checkpoint!r}")
        model.eval()
        self._model = model
        self._whole = Inference(model, window="whole")
        self._inference_cls = Inference
        self.model_id = str(local.resolve()) if local.exists() else checkpoint
        self.model_version = _file_digest(local) if local.is_file() else "hub"
        self.dimension = int(getattr(model, "dimension", 0))

    def _as_input(self, speech: np.ndarray) -> dict[str, object]:
        return {
            "waveform": torch.from_numpy(speech.astype(np.float32))[None],
            "sample_rate": SAMPLE_RATE,
        }

    def embed(self, speech: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return _normalise(np.asarray(self._whole(self._as_input(speech))))

    def embed_windows(self, speech: np.ndarray, window_s: float, hop_s: float) -> np.ndarray:
        if speech.size < int(window_s * SAMPLE_RATE):
            return self.embed(speech)[None]
        sliding = self._inference_cls(self._model, window="sliding", duration=window_s, step=hop_s)
        with torch.inference_mode():
            features = sliding(self._as_input(speech))
        return _normalise(np.asarray(getattr(features, "data", features)))

    def embed_spans(self, samples: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
        if not spans:
            return np.zeros((0, self.dimension), dtype=np.float32)
        width = max(end - start for start, end in spans)
        out = []
        for block in range(0, len(spans), SPAN_BATCH):
            rows = spans[block : block + SPAN_BATCH]
            batch = np.zeros((len(rows), 1, width), dtype=np.float32)
            for row, (start, end) in enumerate(rows):
                chunk = samples[start:end]
                batch[row, 0, : len(chunk)] = chunk
            with torch.inference_mode():
                out.append(self._model(torch.from_numpy(batch)))
        return _normalise(torch.cat(out).numpy())


def load_engine(model: str, token: str | None = None) -> EmbeddingEngine:
    if model == "resemblyzer":
        return ResemblyzerEngine()
    return PyannoteEngine(model, token=token)


@cache
def get_engine() -> EmbeddingEngine:
    from django.conf import settings

    if settings.TORCH_NUM_THREADS > 0:
        torch.set_num_threads(settings.TORCH_NUM_THREADS)
    return load_engine(settings.EMBEDDING_MODEL, settings.HF_TOKEN)
