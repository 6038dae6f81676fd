"""Speech and overlap detection: the bundled segmentation-3.0 model by default, Silero, or a
pyannote.audio segmentation checkpoint."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import torch

from diarization.engine import DiarizationOptions, as_result, diarize
from diarization.segmentation import (
    BundledSegmentation,
    DetectedSpeech,
    PyannoteSegmentation,
    SileroDetector,
    _intersection,
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


# Where two speakers speak at once in the sample (sample.rttm).
SAMPLE_OVERLAP = [(10.57, 11.03), (14.49, 14.70), (18.15, 18.59), (27.85, 28.50)]


def seconds(regions: list[tuple[int, int]]) -> list[tuple[float, float]]:
    return [(a / 16_000, b / 16_000) for a, b in regions]


@cache
def detected() -> DetectedSpeech:
    """The sample as the bundled model hears it."""
    return BundledSegmentation().detect(audio.sample())


def configured(settings, value: str):
    """The jobs' detector with ``DIARIZE_SEGMENTATION_MODEL=value`` (the cache left empty)."""
    settings.DIARIZE_SEGMENTATION_MODEL = value
    get_speech_detector.cache_clear()
    try:
        return get_speech_detector()
    finally:
        get_speech_detector.cache_clear()


def test_the_bundled_segmentation_model_is_the_offline_default_and_finds_the_overlap(settings):
    detector = configured(settings, "bundled")
    assert isinstance(detector, BundledSegmentation)
    assert "segmentation-3.0" in detector.model_id

    speech, overlap, _ = detector.detect(audio.sample())

    # The sample's speech is 6.69-30.0 s, with pauses under 0.3 s.
    found = seconds(speech)
    assert found[0][0] == pytest.approx(6.69, abs=0.1) and found[-1][1] > 29.5
    assert 21 < sum(b - a for a, b in found) < 24
    # Every stretch of overlap it reports is one of the sample's, and it finds most of them.
    hits = {
        index
        for a, b in seconds(overlap)
        for index, (start, end) in enumerate(SAMPLE_OVERLAP)
        if min(b, end) - max(a, start) > 0
    }
    assert all(
        any(min(b, end) - max(a, start) > 0 for start, end in SAMPLE_OVERLAP)
        for a, b in seconds(overlap)
    )
    assert len(hits) >= 3


@pytest.mark.parametrize("value", ["silero", ""])
def test_silero_finds_speech_and_reports_no_overlap(settings, value):
    detector = configured(settings, value)
    assert isinstance(detector, SileroDetector)
    speech, overlap, chunks = detector.detect(audio.sample())
    assert overlap == [] and chunks == []
    assert 20 * 16_000 < sum(b - a for a, b in speech) < 28 * 16_000


def test_a_missing_or_broken_bundled_model_is_a_clear_error(tmp_path):
    with pytest.raises(EngineUnavailable, match="not installed"):
        BundledSegmentation(model=tmp_path / "absent.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(EngineUnavailable, match="cannot load segmentation model"):
        BundledSegmentation(model=broken)


def test_the_bundled_models_speaker_counts_are_averaged_over_the_chunks_covering_a_frame():
    """Known classes in place of the model's, over 15 s (chunks from 0, 2.5, 5 and 7.5 s):
    every chunk hears one voice from 2 s on. The chunks starting at 0 and 2.5 s hear a second
    voice at 3-4 s (both chunks that cover it: overlap); only the first chunk hears one at
    6-7 s (one of the three that cover it: not overlap)."""
    detector = BundledSegmentation(step_s=2.5)
    step, frames_per_chunk = detector.FRAME_STEP, 589
    starts: list[int] = []

    class Known:
        def run(self, _outputs, feeds):
            out = np.full((len(feeds["input"]), frames_per_chunk, 7), -10.0, dtype=np.float32)
            for row in range(len(out)):
                start = len(starts) * detector._step
                starts.append(start)
                times = (start + step * np.arange(frames_per_chunk) + 360) / 16_000
                speaking = times >= 2.0
                both = (times >= 3.0) & (times < 4.0) & (start < 4 * 16_000)
                both |= (times >= 6.0) & (times < 7.0) & (start == 0)
                out[row, ~speaking, 0] = 0.0
                out[row, speaking & ~both, 1] = 0.0
                out[row, both, 4] = 0.0
            return [out]

    class HearsAll:
        def detect(self, samples):
            return DetectedSpeech([(0, len(samples))], [], [])

    detector._session = Known()  # type: ignore[assignment]
    detector._vad = HearsAll()  # type: ignore[assignment]
    speech, overlap, chunks = detector.detect(np.zeros(15 * 16_000, dtype=np.float32))

    # Chunks start every 2.5 s (rounded to a whole number of the model's frames).
    assert [round(s / 16_000, 1) for s in starts] == [0.0, 2.5, 5.0, 7.5]
    assert len(speech) == 1
    assert seconds(speech)[0][0] == pytest.approx(2.0, abs=0.03)
    assert seconds(speech)[0][1] == pytest.approx(15.0, abs=0.03)
    assert len(overlap) == 1
    assert seconds(overlap)[0][0] == pytest.approx(3.0, abs=0.03)
    assert seconds(overlap)[0][1] == pytest.approx(4.0, abs=0.03)
    # Each chunk's local speakers, on the diarization's 20 ms frames: the first chunk hears
    # its speaker 0 from 2 s on, and its speaker 1 with them at 3-4 s and 6-7 s.
    assert [round(c.first_frame * 0.02, 1) for c in chunks] == [0.0, 2.5, 5.0, 7.5]
    first = chunks[0].active
    # 589 model frames of 270 samples from 225 samples in: the chunk's first 9.95 s.
    assert first.shape == (498, 3)
    assert active_seconds(first[:, 0]) == pytest.approx([2.0, 9.96], abs=0.03)
    assert active_seconds(first[:, 1]) == pytest.approx([3.0, 4.0, 6.0, 7.0], abs=0.03)
    assert not first[:, 2].any()
    # The last chunk's frames stop where the audio does.
    assert chunks[-1].first_frame + len(chunks[-1].active) == 750


def active_seconds(mask: np.ndarray) -> list[float]:
    """Start and end (s) of each run of frames in ``mask``, one after the other."""
    changes = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return [round(frame * 0.02, 2) for frame in changes]


def test_the_bundled_model_tells_the_samples_two_speakers_apart_within_a_chunk():
    """In the chunk from 7.5 s, B's short turns at 7.55 and 9.92 s are the local speaker of
    B's long turn at 14.49-17.92 s, and not the one of A's stretch between them (sample.rttm)."""
    chunk = next(c for c in detected().chunks if round(c.first_frame * 0.02, 1) == 7.5)

    def alone_in(start: float, end: float) -> int:
        rows = chunk.active[
            round(start / 0.02) - chunk.first_frame : round(end / 0.02) - chunk.first_frame
        ]
        alone = rows & (rows.sum(axis=1) == 1)[:, None]
        return int(np.argmax(alone.sum(axis=0)))

    b_long = alone_in(15.0, 17.4)
    assert alone_in(7.6, 8.3) == b_long
    assert alone_in(9.95, 10.35) == b_long
    assert alone_in(8.5, 9.8) != b_long


def test_a_local_segmentation_checkpoint_gives_speech_and_overlap(segmentation_checkpoint):
    detector = PyannoteSegmentation(str(segmentation_checkpoint))
    assert detector.model_id == str(segmentation_checkpoint.resolve())
    samples = audio.sample()

    speech, overlap, chunks = detector.detect(samples)

    for regions in (speech, overlap):
        assert all(0 <= a < b <= len(samples) for a, b in regions)
        assert all(b1 <= a2 for (_, b1), (a2, _) in zip(regions, regions[1:], strict=False))
    # Overlap is speech by definition.
    for a, b in overlap:
        assert any(s <= a and b <= e for s, e in speech)
    # Its 5 s chunks' three local speakers, on the diarization's frames within the audio.
    assert chunks
    frames = int(np.ceil(len(samples) / 16_000 / 0.02))
    for chunk in chunks:
        assert chunk.active.shape[1] == 3
        assert len(chunk.active) == pytest.approx(5.0 / 0.02, abs=3) or (
            chunk.first_frame + len(chunk.active) == frames
        )


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


def test_overlapped_speech_is_never_matched_and_carries_only_the_turn_it_continues():
    from voice.gallery import EnrolledGallery
    from voice.vad import get_vad, speech_only

    samples = audio.sample()
    speech = SileroDetector(100).detect(samples).speech
    clip = audio.clip([(21.9, 26.9)])
    vector = get_engine().voiceprint(speech_only(clip, get_vad().speech_regions(clip)))[0]
    gallery = EnrolledGallery(["bob"], vector[None])
    # Said to be overlapped inside bob's stretch 21.78-28.50 s (only bob is enrolled).
    overlap = [(int(22.0 * 16_000), int(24.0 * 16_000))]

    result = diarize(samples, speech, get_engine(), gallery, DiarizationOptions(), overlap=overlap)
    body = as_result(result, DiarizationOptions())

    inside = [s for s in body["segments"] if s["start"] >= 22.0 and s["end"] <= 24.0]
    # Two voices at once: two segments over the same time.
    assert len(inside) == 2
    assert all(np.isclose(s["start"], 22.0, atol=0.05) for s in inside)
    assert {s["speaker_label"] for s in inside} == {"bob", "spk_0"}
    for segment in inside:
        assert "turn_score" not in segment  # its audio was never scored against the gallery
        if segment["speaker_label"] == "bob":
            assert segment["reason"] == "continues_turn"
    assert any(
        s["speaker_label"] == "bob" and s["reason"] == "enrolled_match" for s in body["segments"]
    )


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
    speech, overlap, _ = detector.detect(np.zeros(int(seconds * 16_000), dtype=np.float32))

    assert len(speech) == 1 and len(overlap) == 1
    assert speech[0][0] / 16_000 == pytest.approx(1.0, abs=0.05)
    assert speech[0][1] / 16_000 == pytest.approx(4.0, abs=0.05)
    assert overlap[0][0] / 16_000 == pytest.approx(2.0, abs=0.05)
    assert overlap[0][1] / 16_000 == pytest.approx(3.0, abs=0.05)


def test_speech_is_where_both_the_model_and_the_vad_hear_it():
    model = [(0, 100), (150, 400), (500, 600)]
    vad = [(50, 200), (350, 550), (700, 800)]
    assert _intersection(model, vad) == [(50, 100), (150, 200), (350, 400), (500, 550)]
    assert _intersection(model, []) == []
