"""Threshold arithmetic of the consent check's calibration, on synthetic scores."""

import numpy as np
import pytest

from enrollment.calibration import PairScores, rates_at, thresholds_for

SCORES = PairScores(
    genuine=np.asarray([0.62, 0.70, 0.75, 0.80, 0.90]),
    impostor=np.asarray([0.30, 0.40, 0.50, 0.55, 0.60, 0.64, 0.66, 0.70, 0.20, 0.10]),
)


def test_rates_count_each_outcome_against_both_thresholds():
    rates = rates_at(SCORES, 0.60, 0.68)
    assert (rates.genuine, rates.impostor) == (5, 10)
    assert rates.false_accepts == 1  # 0.70 passes
    assert rates.false_rejects == 1  # 0.62 is held
    assert (rates.genuine_reviewed, rates.genuine_refused) == (1, 0)
    assert rates.impostor_reviewed == 3  # 0.60, 0.64, 0.66
    assert rates.false_accept_rate == pytest.approx(0.1)
    assert rates.false_reject_rate == pytest.approx(0.2)


def test_no_false_accepts_puts_review_just_above_the_highest_impostor():
    reject_below, review_below = thresholds_for(SCORES, 0.0)
    assert review_below == pytest.approx(0.701)
    assert reject_below == pytest.approx(0.62)  # no genuine pair refused
    assert rates_at(SCORES, reject_below, review_below).false_accepts == 0


def test_a_target_rate_lets_that_share_of_impostors_pass():
    reject_below, review_below = thresholds_for(SCORES, 0.2)  # 2 of 10 may pass
    assert review_below == pytest.approx(0.641)
    assert rates_at(SCORES, reject_below, review_below).false_accepts == 2


def test_refusal_never_sits_above_review():
    overlapping = PairScores(np.asarray([0.5, 0.9]), np.asarray([0.3, 0.4]))
    reject_below, review_below = thresholds_for(overlapping, 0.0)
    assert reject_below <= review_below == pytest.approx(0.401)
    _, nearly_everything = thresholds_for(overlapping, 0.99)  # 1 of 2 may pass
    assert nearly_everything == pytest.approx(0.301)
