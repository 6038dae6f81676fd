"""The shared scoring path: frame smoothing and a turn's open-set attribution."""

from __future__ import annotations

import numpy as np
import pytest

from diarization.scoring import (
    FRAME_S,
    Reason,
    ScoringRules,
    attribute,
    frame_scores,
    smooth_path,
    window_spans,
)
from voice.gallery import EnrolledGallery

RULES = ScoringRules(turn_threshold=0.65, enrolled_margin=0.03, unenrolled_margin=0.03)


def unit(*values: float) -> np.ndarray:
    vector = np.zeros(8, dtype=np.float32)
    vector[: len(values)] = values
    return vector / np.linalg.norm(vector)


ALICE, BOB, STRANGER = unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)
GALLERY = EnrolledGallery(["alice", "bob"], np.stack([ALICE, BOB]))


def frames(seconds: float, scores: tuple[float, float]) -> np.ndarray:
    return np.tile(np.asarray(scores, dtype=np.float32), (int(round(seconds / FRAME_S)), 1))


def test_a_half_second_turn_that_clearly_favours_another_voice_survives_smoothing():
    scores = np.concatenate(
        [frames(3.0, (0.9, 0.7)), frames(0.5, (0.7, 0.9)), frames(3.0, (0.9, 0.7))]
    )
    path = smooth_path(scores, change_penalty=0.02)
    assert set(path[150:175].tolist()) == {1}
    assert set(path[:150].tolist()) == set(path[175:].tolist()) == {0}


def test_a_blip_of_a_few_frames_does_not_change_the_voice():
    scores = np.concatenate(
        [frames(3.0, (0.9, 0.7)), frames(0.06, (0.7, 0.9)), frames(3.0, (0.9, 0.7))]
    )
    assert set(smooth_path(scores, change_penalty=0.02).tolist()) == {0}


def test_frame_scores_average_the_windows_that_cover_each_frame():
    spans = [(0, 16_000), (8_000, 24_000)]
    similarity = np.asarray([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    scores, weight = frame_scores(spans, similarity, frames=80)

    assert scores[10].tolist() == [1.0, 0.0]  # only the first window
    assert scores[70].tolist() == [0.0, 1.0]  # only the second
    assert 0.0 < scores[40, 0] < 1.0  # both, tapered
    assert not weight[76:].any()  # no window covers the last frames


def test_windows_hop_a_quarter_second_and_skip_too_short_speech():
    spans = window_spans([(0, 48_000), (60_000, 62_000)])
    starts = [start for start, _ in spans]
    assert starts[:3] == [0, 4_000, 8_000]
    assert spans[-1] == (24_000, 48_000)
    assert all(end <= 48_000 for _, end in spans)  # the 0.125 s blip has no window


def test_a_turn_that_confirms_its_enrolled_voice_is_attributed():
    decided = attribute(unit(1, 0.1), GALLERY, "alice", ALICE, np.zeros((0, 8)), RULES)
    assert decided.speaker_id == "alice" and decided.reason == Reason.ENROLLED_MATCH
    assert decided.score == pytest.approx(0.995, abs=1e-3)
    assert decided.second_best_score == pytest.approx(0.0995, abs=1e-3)


def test_a_turn_whose_own_evidence_is_weak_is_not_attributed():
    decided = attribute(unit(1, 0, 1.2), GALLERY, "alice", ALICE, np.zeros((0, 8)), RULES)
    assert decided.speaker_id is None and decided.reason == Reason.WEAK_MATCH


def test_a_turn_as_close_to_another_enrolled_speaker_is_not_attributed():
    decided = attribute(unit(1, 0.98), GALLERY, "alice", ALICE, np.zeros((0, 8)), RULES)
    assert decided.speaker_id is None and decided.reason == Reason.AMBIGUOUS_ENROLLED


def test_a_turn_as_close_to_a_voice_nobody_enrolled_goes_to_that_voice():
    strangers = np.stack([BOB, unit(0.8, 0, 0.6)])
    decided = attribute(unit(1, 0, 0.45), GALLERY, "alice", ALICE, strangers, RULES)
    assert decided.speaker_id is None
    assert decided.reason == Reason.CLOSER_TO_UNENROLLED
    assert decided.closer_voice == 1


def test_a_voice_nobody_enrolled_is_never_attributed():
    decided = attribute(ALICE, GALLERY, None, None, np.zeros((0, 8)), RULES)
    assert decided.speaker_id is None and decided.reason == Reason.UNENROLLED_VOICE
