"""The gallery matrix: enrolled voiceprints stacked for scoring many embeddings at once."""

from __future__ import annotations

import numpy as np


class EnrolledGallery:
    """The enrolled voiceprints one diarization may match, as one matrix for fast scoring."""

    def __init__(self, speaker_ids: list[str], vectors: np.ndarray):
        self.speaker_ids = speaker_ids
        matrix = np.asarray(vectors, dtype=np.float32)
        self.matrix = np.ascontiguousarray(
            matrix.reshape(len(speaker_ids), -1) if speaker_ids else np.zeros((0, 0), np.float32)
        )

    def __len__(self) -> int:
        return len(self.speaker_ids)

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """Cosine similarities, shape (len(vectors), len(self)); inputs are L2-normalised."""
        if not self.speaker_ids:
            return np.zeros((len(vectors), 0), dtype=np.float32)
        return np.asarray(vectors, dtype=np.float32) @ self.matrix.T

    def best_match(self, vector: np.ndarray) -> tuple[str, float] | None:
        """The closest enrolled speaker and its score; None when the gallery is empty."""
        if not self.speaker_ids:
            return None
        scores = self.scores(np.asarray(vector, dtype=np.float32)[None, :])[0]
        best = int(np.argmax(scores))
        return self.speaker_ids[best], float(scores[best])

    def without(self, speaker_ids: set[str]) -> EnrolledGallery:
        keep = [i for i, s in enumerate(self.speaker_ids) if s not in speaker_ids]
        return EnrolledGallery([self.speaker_ids[i] for i in keep], self.matrix[keep])

    def top_two(self, vectors: np.ndarray) -> list[tuple[int, float, float]]:
        """Per vector: index of the best enrolled speaker, its score, the second-best score."""
        if not len(self):
            return []
        scores = self.scores(vectors)
        out = []
        for row in scores:
            if len(row) == 1:
                out.append((0, float(row[0]), float("nan")))
                continue
            two = np.argpartition(row, -2)[-2:]
            best, second = (two[1], two[0]) if row[two[1]] >= row[two[0]] else (two[0], two[1])
            out.append((int(best), float(row[best]), float(row[second])))
        return out
