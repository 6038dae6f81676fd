"""Speech and overlap detection: Silero by default, a pyannote.audio segmentation checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diarization.engine import DiarizationOptions, as_result, diarize
from diarization.segmentation import (
    PyannoteSegmentation,
    SileroDetector,
    get_speech_detector,
)
from tests import audio
from tests.checkpoints import save_checkpoint
from voice.engines import EngineUnavailable, get_engine


@pytest.fixture(scope="module")
def segmentation_checkpoint(tmp_path_factory):
    """A pyannote.audio powerset segmentation checkpoint made here (random weights)."""
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.segmentation import PyanNet

    torch.manual_seed(0)
    model = PyanNet(sincnet={"stride": 10})
    model.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION,
        resolution=Resolution.FRAME,
        duration=5.0,
        min_duration=5.0,
        warm_up=(0.0, 0.0),
        classes=["speaker#1", "speaker#2", "speaker#3"],
        powerset_max_classes=2,
        permutation_invariant=True,
    )
    model.build()
    return save_checkpoint(model, tmp_path_factory.mktemp("segmentation") / "pytorch_model.bin")


def test_silero_is_the_offline_default_and_reports_no_overlap(settings):
    settings.DIARIZE_SEGMENTATION_MODEL = ""
    get_speech_detector.cache_clear()
    detector = get_speech_detector()
    assert isinstance(detector, SileroDetector)
    speech, overlap = detector.regions(audio.sample())
    assert overlap == []
    assert 20 * 16_000 < sum(b - a for a, b in speech) < 28 * 16_000


def test_a_local_segmentation_checkpoint_gives_speech_and_overlap(segmentation_checkpoint):
    detector = PyannoteSegmentation(str(segmentation_checkpoint))
    assert detector.model_id == str(segmentation_checkpoint.resolve())
    samples = audio.sample()

    speech, overlap = detector.regions(samples)

    for regions in (speech, overlap):
        assert all(0 <= a < b <= len(samples) for a, b in regions)
        assert all(b1 <= a2 for (_, b1), (a2, _) in zip(regions, regions[1:], strict=False))
    # Overlap is speech by definition.
    for a, b in overlap:
        assert any(s <= a and b <= e for s, e in speech)


def test_the_configured_checkpoint_becomes_the_jobs_detector(settings, segmentation_checkpoint):
    settings.DIARIZE_SEGMENTATION_MODEL = str(segmentation_checkpoint)
    get_speech_detector.cache_clear()
    try:
        assert isinstance(get_speech_detector(), PyannoteSegmentation)
    finally:
        get_speech_detector.cache_clear()


def test_a_broken_checkpoint_is_a_clear_error(tmp_path):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(EngineUnavailable, match="segmentation model"):
        PyannoteSegmentation(str(broken))


def test_overlapped_speech_is_never_labelled_with_an_enrolled_speaker():
    from voice.gallery import EnrolledGallery
    from voice.vad import get_vad, speech_only

    samples = audio.sample()
    speech, _ = SileroDetector(100).regions(samples)
    clip = audio.clip([(21.9, 26.9)])
    vector = get_engine().voiceprint(speech_only(clip, get_vad().speech_regions(clip)))[0]
    gallery = EnrolledGallery(["bob"], vector[None])
    overlap = [(int(22.0 * 16_000), int(24.0 * 16_000))]

    result = diarize(samples, speech, get_engine(), gallery, DiarizationOptions(), overlap=overlap)
    body = as_result(result, DiarizationOptions())

    inside = [s for s in body["segments"] if s["start"] >= 22.0 and s["end"] <= 24.0]
    assert inside and all(s["speaker_label"] is None for s in inside)
    assert {s["unlabelled_reason"] for s in inside} == {"overlap"}
    assert "bob" in {s["speaker_label"] for s in body["segments"]}
    assert np.isclose(inside[0]["start"], 22.0, atol=0.05)


def test_speaker_counts_are_aggregated_across_windows_into_speech_and_overlap(
    segmentation_checkpoint,
):
    """Known activities in place of the model's: one voice from 1 s, a second from 2 s to 3 s."""
    from pyannote.core import SlidingWindow, SlidingWindowFeature

    detector = PyannoteSegmentation(str(segmentation_checkpoint))
    frames = detector._frames
    chunks = SlidingWindow(start=0.0, duration=5.0, step=0.5)
    seconds = 6.0
    count = int((seconds - 5.0) / 0.5) + 1
    per_chunk = int(round(5.0 / frames.step))
    data = np.zeros((count, per_chunk, 3), dtype=np.float32)
    for c in range(count):
        times = chunks[c].start + frames.step * np.arange(per_chunk) + frames.duration / 2
        # Each window puts the voices in different local slots: the count is what matters.
        first, second = (c % 3), ((c + 1) % 3)
        data[c, (times >= 1.0) & (times < 4.0), first] = 1.0
        data[c, (times >= 2.0) & (times < 3.0), second] = 1.0

    class Known:
        def __call__(self, _):
            return SlidingWindowFeature(data, chunks)

    detector._inference = Known()
    speech, overlap = detector.regions(np.zeros(int(seconds * 16_000), dtype=np.float32))

    assert len(speech) == 1 and len(overlap) == 1
    assert speech[0][0] / 16_000 == pytest.approx(1.0, abs=0.05)
    assert speech[0][1] / 16_000 == pytest.approx(4.0, abs=0.05)
    assert overlap[0][0] / 16_000 == pytest.approx(2.0, abs=0.05)
    assert overlap[0][1] / 16_000 == pytest.approx(3.0, abs=0.05)
