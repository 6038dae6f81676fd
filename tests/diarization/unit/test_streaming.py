"""The streaming diarizer with the real models: Silero VAD turns, the engine's embeddings."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest

from diarization.streaming import SAMPLE_RATE, Delta, StreamDiarizer, StreamSettings
from tests import audio
from voice.gallery import EnrolledGallery

# Voiceprints come from at most 5 s of one voice, as a short enrollment would give.
ENROLL_A = (10.6, 14.45)
ENROLL_B = (21.9, 26.9)
CONVERSATION = (10.6, 30.0)  # A, B, A, B, A (sample.rttm)
CHUNK = SAMPLE_RATE // 10  # the client sends 100 ms at a time
SPEAKER_ID = re.compile(r"^spk_\d+$")


@pytest.fixture(scope="module")
def engine():
    from voice.engines import get_engine

    return get_engine()


@pytest.fixture(scope="module")
def voiceprints(engine) -> dict[str, np.ndarray]:
    from voice.vad import get_vad, speech_only

    out = {}
    for name, span in [("A", ENROLL_A), ("B", ENROLL_B)]:
        speech = audio.clip([span])
        vector, _ = engine.voiceprint(speech_only(speech, get_vad().speech_regions(speech)))
        out[name] = vector
    return out


@pytest.fixture(scope="module")
def gallery(voiceprints) -> EnrolledGallery:
    return EnrolledGallery(["A", "B"], np.stack([voiceprints["A"], voiceprints["B"]]))


def stream_settings(**overrides: float) -> StreamSettings:
    from django.conf import settings

    values: dict[str, float] = {
        "end_of_turn_ms": settings.STREAM_END_OF_TURN_MS,
        "max_turn_s": settings.STREAM_MAX_TURN_S,
        "cluster_threshold": settings.STREAM_CLUSTER_THRESHOLD,
        "threshold": settings.DIARIZE_IDENTIFICATION_THRESHOLD,
        "min_label_s": settings.DIARIZE_MIN_LABEL_S,
    }
    values.update(overrides)
    return StreamSettings(**values)  # type: ignore[arg-type]


def diarizer(
    engine,
    *,
    gallery: EnrolledGallery | None = None,
    label_speakers: bool = True,
    is_live: Callable[[str], bool] = lambda speaker_id: True,
    **overrides: float,
) -> StreamDiarizer:
    from silero_vad import load_silero_vad

    return StreamDiarizer(
        engine,
        load_silero_vad(),
        stream_settings(**overrides),
        gallery=gallery,
        display_names={"A": "Alice Example", "B": "Bob Example"},
        label_speakers=label_speakers,
        is_live=is_live,
    )


def feed(stream: StreamDiarizer, samples: np.ndarray, chunk: int = CHUNK) -> list[Delta]:
    deltas: list[Delta] = []
    for offset in range(0, len(samples), chunk):
        deltas.extend(stream.feed(samples[offset : offset + chunk]))
    return deltas


def conversation() -> np.ndarray:
    return audio.clip([CONVERSATION])


def at(deltas: list[Delta], second: float) -> Delta:
    (delta,) = [d for d in deltas if d.start <= second < d.end]
    return delta


def test_deltas_are_ordered_and_within_the_audio(engine):
    samples = audio.sample()
    stream = diarizer(engine)

    deltas = feed(stream, samples)

    duration = len(samples) / SAMPLE_RATE
    assert stream.received_s == pytest.approx(duration)
    assert len(deltas) >= 2
    for delta in deltas:
        assert 0.0 <= delta.start < delta.end <= duration
    for before, after in zip(deltas, deltas[1:], strict=False):
        assert before.end <= after.start
    # Nobody enrolled: every turn long enough to embed gets a session voice, spk_N.
    assert all(SPEAKER_ID.match(d.speaker_label or "") for d in deltas)
    assert all(d.display_name is None for d in deltas)
    assert deltas[0].speaker_label == "spk_0"
    # The sample's first words are at 6.69 s (sample.rttm); the VAD pads turns by 30 ms.
    assert deltas[0].start == pytest.approx(6.69, abs=0.15)


def test_delta_messages_follow_the_protocol(engine, gallery):
    stream = diarizer(engine, gallery=gallery, max_turn_s=4.0)

    messages = [d.message() for d in feed(stream, conversation()) + stream.flush()]

    assert messages
    for message in messages:
        assert message["type"] == "delta"
        assert message["text"] == ""
        assert set(message) <= {"type", "start", "end", "text", "speaker_label", "display_name"}
    named = [m for m in messages if m.get("speaker_label") in ("A", "B")]
    assert named and all(m["display_name"] in ("Alice Example", "Bob Example") for m in named)


def test_flush_never_reports_audio_that_was_not_received(engine):
    """The sample is 30 s: no delta may end after 30 s, and 30 s is what was received."""
    samples = audio.sample()
    stream = diarizer(engine)
    deltas = feed(stream, samples)

    deltas += stream.flush()

    duration = len(samples) / SAMPLE_RATE
    assert deltas[-1].end <= duration
    assert stream.received_s == pytest.approx(duration)


def test_enrolled_speakers_are_named(engine, gallery):
    # Turns of at most 4 s: the sample's conversation has few pauses of 300 ms.
    stream = diarizer(engine, gallery=gallery, max_turn_s=4.0)

    deltas = feed(stream, conversation()) + stream.flush()

    labels = {d.speaker_label for d in deltas}
    assert {"A", "B"} <= labels
    assert stream.matched == {"A", "B"}
    for delta in deltas:
        if delta.speaker_label == "A":
            assert delta.display_name == "Alice Example"
        if delta.speaker_label == "B":
            assert delta.display_name == "Bob Example"
    # 12.0 s into the sample A speaks alone, at 24.0 s B does (times are the stream's own).
    assert at(deltas, 12.0 - CONVERSATION[0]).speaker_label == "A"
    assert at(deltas, 24.0 - CONVERSATION[0]).speaker_label == "B"


def test_enrolled_speakers_are_named_with_the_default_turn_length(engine, gallery):
    stream = diarizer(engine, gallery=gallery)

    deltas = feed(stream, conversation()) + stream.flush()

    assert {"A", "B"} <= {d.speaker_label for d in deltas}


def test_a_speaker_who_is_no_longer_live_is_never_named(engine, gallery):
    asked: list[str] = []

    def is_live(speaker_id: str) -> bool:
        asked.append(speaker_id)
        return speaker_id != "A"

    stream = diarizer(engine, gallery=gallery, is_live=is_live, max_turn_s=4.0)

    deltas = feed(stream, conversation()) + stream.flush()

    assert "A" in asked  # A's voice did match: the erasure check is what kept the label off
    labels = [d.speaker_label for d in deltas]
    assert "A" not in labels
    assert all(d.display_name != "Alice Example" for d in deltas)
    assert "B" in labels
    assert any(SPEAKER_ID.match(label or "") for label in labels)
    assert at(deltas, 12.0 - CONVERSATION[0]).speaker_label.startswith("spk_")
    assert stream.matched == {"B"}


def test_without_labels_no_delta_carries_a_speaker(engine, gallery):
    stream = diarizer(engine, gallery=gallery, label_speakers=False, max_turn_s=4.0)

    deltas = feed(stream, conversation()) + stream.flush()

    assert len(deltas) >= 3
    assert all(d.speaker_label is None and d.display_name is None for d in deltas)
    assert all("speaker_label" not in d.message() for d in deltas)
    assert stream.matched == set()


def test_flush_decides_the_open_turn(engine):
    # Speech to the very end, no trailing silence: the VAD never ends the turn.
    speech = audio.clip([ENROLL_A])
    stream = diarizer(engine)

    assert feed(stream, speech) == []
    deltas = stream.flush()

    assert len(deltas) == 1
    (turn,) = deltas
    assert turn.start == pytest.approx(0.26, abs=0.1)
    assert turn.end == pytest.approx(len(speech) / SAMPLE_RATE, abs=0.04)
    assert turn.speaker_label == "spk_0"
    assert stream.flush() == []


def test_flush_of_an_enrolled_voice_names_it(engine, gallery):
    stream = diarizer(engine, gallery=gallery)

    assert feed(stream, audio.clip([(18.6, 21.4)])) == []  # A, not the enrollment audio
    (turn,) = stream.flush()

    assert turn.speaker_label == "A"
    assert turn.display_name == "Alice Example"


def test_a_turn_longer_than_max_turn_is_split(engine):
    # 6.5 s of B; the end of turn waits for 3 s of silence so that only the split cuts it.
    speech = audio.clip([(21.9, 28.4)])
    stream = diarizer(engine, max_turn_s=2.0, end_of_turn_ms=3000)

    deltas = feed(stream, speech)

    assert len(deltas) >= 2
    for delta in deltas:
        assert 0 < delta.end - delta.start <= 2.0 + 512 / SAMPLE_RATE
    for before, after in zip(deltas, deltas[1:], strict=False):
        assert after.start == before.end  # one turn cut in pieces, nothing lost between
    assert {d.speaker_label for d in deltas} == {"spk_0"}


@pytest.mark.parametrize(
    ("samples", "overrides"),
    [
        # The split falls in the 300 ms the VAD waits before ending the turn.
        (
            lambda: np.concatenate([audio.clip([ENROLL_A]), audio.silence(1.0)]),
            {"max_turn_s": 3.75},
        ),
        # The split falls on the very chunk flush() pads and steps.
        (lambda: audio.clip([(21.9, 28.4)]), {"max_turn_s": 2.0, "end_of_turn_ms": 3000}),
    ],
    ids=["split-then-end-of-turn", "split-then-flush"],
)
def test_a_split_never_yields_an_empty_delta(engine, samples, overrides):
    stream = diarizer(engine, **overrides)

    deltas = feed(stream, samples()) + stream.flush()

    assert deltas
    assert [d for d in deltas if d.end <= d.start] == []


def test_a_blip_too_short_to_embed_is_left_unlabelled(engine, gallery):
    blip = np.concatenate([audio.silence(1.0), audio.clip([(11.0, 11.3)]), audio.silence(1.0)])
    stream = diarizer(engine, gallery=gallery)

    deltas = feed(stream, blip) + stream.flush()

    assert len(deltas) == 1
    assert deltas[0].speaker_label is None
    assert stream.matched == set()


def test_chunk_size_does_not_change_the_deltas(engine, gallery):
    samples = conversation()
    first = diarizer(engine, gallery=gallery, max_turn_s=4.0)
    second = diarizer(engine, gallery=gallery, max_turn_s=4.0)

    by_100ms = feed(first, samples) + first.flush()
    by_odd_chunks = feed(second, samples, chunk=777) + second.flush()

    assert by_odd_chunks == by_100ms
