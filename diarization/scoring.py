"""The one scoring path of batch and streaming diarization: who speaks at each frame, and
whether a turn may carry an enrolled speaker's id.

Both paths embed 1.5 s windows every 0.25 s over the speech, score every window against
their candidate voices (a batch job's clusters; a stream's enrolled and session voices),
spread each window's scores over the frames it covers (``frame_scores``) and pick one voice
per frame with a Viterbi pass that charges a penalty for every change of voice
(``smooth_path``): a turn of half a second survives when its frames clearly favour another
voice, a single noisy window does not.

Which voice a frame belongs to is not yet who the speaker is. Every turn is then judged on
its own evidence, the embedding of its own audio (``attribute``): it carries an enrolled
speaker's id only when it matches that voiceprint well enough, better than any other enrolled
voiceprint by a margin, and better than the closest voice of the recording that is nobody
enrolled by a margin. A short turn of a stranger thus never inherits the id of the enrolled
voice it was clustered with: it gets the stranger's ``spk_N`` or no label, and its
``reason`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from voice.gallery import EnrolledGallery

SAMPLE_RATE = 16_000
FRAME_S = 0.02  # label and confidence resolution
WINDOW_S = 1.5
HOP_S = 0.25
# Speech shorter than this has no embedding of its own.
MIN_EMBED_S = 0.4
# Overlapped speech continues a clean turn of one of its voices that ends or starts this close.
CONTINUED_WITHIN_S = 0.5


class Reason(StrEnum):
    """Why a turn carries the label it does (``reason`` of each segment and delta)."""

    ENROLLED_MATCH = "enrolled_match"  # its own evidence matches the enrolled speaker
    UNENROLLED_VOICE = "unenrolled_voice"  # a voice that is nobody enrolled: spk_N
    WEAK_MATCH = "weak_match"  # its own evidence scores under the turn threshold
    AMBIGUOUS_ENROLLED = "ambiguous_enrolled"  # another enrolled speaker scores about as well
    CLOSER_TO_UNENROLLED = "closer_to_unenrolled_voice"  # as close to a voice nobody enrolled
    TOO_SHORT = "too_short"  # too little speech to be evidence of anyone
    OVERLAP = "overlap"  # two voices at once, and no clean turn of this voice next to it
    CONTINUES_TURN = "continues_turn"  # two voices at once: the label of the turn it continues
    # Two voices at once: the label of a clean turn of its voice that the segmentation model
    # hears as the same speaker (within one of its chunks).
    SAME_VOICE_AS_TURN = "same_voice_as_turn"


@dataclass(frozen=True)
class ScoringRules:
    """Thresholds of a turn's own evidence and of the frame assignment (``DIARIZE_*``)."""

    turn_threshold: float = 0.65
    enrolled_margin: float = 0.03
    unenrolled_margin: float = 0.03
    change_penalty: float = 0.02
    # What a voice no one has heard yet scores against every window: a window that fits no
    # known voice better than this is someone new.
    new_voice_score: float = 0.7


@dataclass(frozen=True)
class Attribution:
    speaker_id: str | None
    score: float | None
    second_best_score: float | None
    reason: Reason
    # Index of the voice nobody enrolled that the turn is as close to (CLOSER_TO_UNENROLLED).
    closer_voice: int | None = None


def window_spans(
    regions: list[tuple[int, int]], window_s: float = WINDOW_S, hop_s: float = HOP_S
) -> list[tuple[int, int]]:
    """Sliding windows over each speech region (sample ranges); a region shorter than a
    window is one span of its own, one too short to embed none."""
    width, hop, shortest = (int(s * SAMPLE_RATE) for s in (window_s, hop_s, MIN_EMBED_S))
    spans: list[tuple[int, int]] = []
    for start, end in regions:
        if end - start < shortest:
            continue
        if end - start <= width:
            spans.append((start, end))
            continue
        starts = list(range(start, end - width + 1, hop))
        if starts[-1] + width < end:
            starts.append(end - width)
        spans.extend((s, s + width) for s in starts)
    return spans


def to_frame(sample: int) -> int:
    return int(round(sample / SAMPLE_RATE / FRAME_S))


def frame_count(samples: int) -> int:
    """How many frames cover this many samples (the last one may be partial)."""
    return int(np.ceil(samples / SAMPLE_RATE / FRAME_S))


def frame_scores(
    spans: list[tuple[int, int]], similarity: np.ndarray, frames: int, origin: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the windows' similarities to each voice averaged with a Hann taper (a
    window says most about its centre), and how much window weight covered the frame.

    ``similarity`` is (windows, voices); ``origin`` is the sample of frame 0.
    """
    voices = similarity.shape[1] if similarity.ndim == 2 else 0
    total = np.zeros((frames, voices), dtype=np.float32)
    weight = np.zeros(frames, dtype=np.float32)
    for row, (start, end) in enumerate(spans):
        a = to_frame(start - origin)
        b = max(a + 1, to_frame(end - origin))
        taper = np.hanning(b - a + 2)[1:-1].astype(np.float32)
        lo, hi = max(a, 0), min(b, frames)
        if hi <= lo:
            continue
        piece = taper[lo - a : hi - a]
        total[lo:hi] += piece[:, None] * similarity[row][None, :]
        weight[lo:hi] += piece
    scores = total / np.maximum(weight, 1e-9)[:, None]
    return scores, weight


def smooth_path(scores: np.ndarray, change_penalty: float) -> np.ndarray:
    """The voice per frame that maximises the frames' summed scores (in similarity x
    seconds) minus ``change_penalty`` for every change of voice: Viterbi over the frames
    given (frames, voices)."""
    frames, voices = scores.shape
    if not frames or not voices:
        return np.zeros(frames, dtype=int)
    gains = scores.astype(np.float64) * FRAME_S
    back = np.zeros((frames, voices), dtype=np.int32)
    best = gains[0].copy()
    for frame in range(1, frames):
        leader = int(np.argmax(best))
        switch = best[leader] - change_penalty
        stay = best >= switch
        back[frame] = np.where(stay, np.arange(voices), leader)
        best = np.where(stay, best, switch) + gains[frame]
    path = np.zeros(frames, dtype=int)
    path[-1] = int(np.argmax(best))
    for frame in range(frames - 1, 0, -1):
        path[frame - 1] = back[frame, path[frame]]
    return path


def attribute(
    evidence: np.ndarray,
    gallery: EnrolledGallery | None,
    candidate: str | None,
    own_voice: np.ndarray | None,
    unenrolled_voices: np.ndarray,
    rules: ScoringRules,
) -> Attribution:
    """Whether a turn whose own embedding is ``evidence`` is the enrolled ``candidate``.

    ``candidate`` is the enrolled speaker its voice was identified as (None: its voice is
    nobody enrolled); ``own_voice`` that voice's centroid in the same recording and
    ``unenrolled_voices`` the centroids of the recording's voices that are nobody enrolled
    (rows), so that the last margin compares like with like.
    """
    if candidate is None or gallery is None or candidate not in gallery.speaker_ids:
        return Attribution(None, None, None, Reason.UNENROLLED_VOICE)
    scores = gallery.scores(evidence[None])[0]
    own = gallery.speaker_ids.index(candidate)
    score = float(scores[own])
    others = np.delete(scores, own)
    second = float(others.max()) if len(others) else None
    rounded = (round(score, 4), None if second is None else round(second, 4))
    if score < rules.turn_threshold:
        return Attribution(None, *rounded, Reason.WEAK_MATCH)
    if second is not None and score - second < rules.enrolled_margin:
        return Attribution(None, *rounded, Reason.AMBIGUOUS_ENROLLED)
    if len(unenrolled_voices):
        closeness = unenrolled_voices @ evidence
        nearest = int(np.argmax(closeness))
        reference = float(own_voice @ evidence) if own_voice is not None else score
        if reference - float(closeness[nearest]) < rules.unenrolled_margin:
            return Attribution(None, *rounded, Reason.CLOSER_TO_UNENROLLED, nearest)
    return Attribution(candidate, *rounded, Reason.ENROLLED_MATCH)


def normalised_mean(vectors: np.ndarray) -> np.ndarray:
    mean = vectors.mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
