"""The streaming diarizer with the real models: Silero VAD turns, the engine's embeddings."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache

import numpy as np
import pytest

from diarization.segmentation import BundledSegmentation
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
        "step_s": settings.STREAM_STEP_S,
        "max_latency_s": settings.STREAM_MAX_LATENCY_S,
        "cluster_threshold": settings.STREAM_CLUSTER_THRESHOLD,
        "threshold": settings.DIARIZE_IDENTIFICATION_THRESHOLD,
        "min_label_s": settings.DIARIZE_MIN_LABEL_S,
    }
    values.update(overrides)
    return StreamSettings(**values)  # type: ignore[arg-type]


@cache
def bundled() -> BundledSegmentation:
    return BundledSegmentation()


def diarizer(
    engine,
    *,
    gallery: EnrolledGallery | None = None,
    label_speakers: bool = True,
    is_live: Callable[[str], bool] = lambda speaker_id: True,
    hear_overlap: bool = True,
    **overrides: float,
) -> StreamDiarizer:
    """A session as the service opens one (its overlap detector is the bundled model)."""
    from silero_vad import load_silero_vad

    return StreamDiarizer(
        engine,
        load_silero_vad(),
        stream_settings(**overrides),
        gallery=gallery,
        display_names={"A": "Alice Example", "B": "Bob Example"},
        label_speakers=label_speakers,
        is_live=is_live,
        overlap=bundled() if hear_overlap else None,
    )


def turns_of(deltas: list[Delta]) -> list[Delta]:
    """The deltas of the voice each stretch's frames chose (not a second voice's)."""
    return [d for d in deltas if d.reason != "continues_turn"]


def feed(stream: StreamDiarizer, samples: np.ndarray, chunk: int = CHUNK) -> list[Delta]:
    deltas: list[Delta] = []
    for offset in range(0, len(samples), chunk):
        deltas.extend(stream.feed(samples[offset : offset + chunk]))
    return deltas


def conversation() -> np.ndarray:
    return audio.clip([CONVERSATION])


def at(deltas: list[Delta], second: float) -> Delta:
    (delta,) = [d for d in turns_of(deltas) if d.start <= second < d.end]
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
    for before, after in zip(turns_of(deltas), turns_of(deltas)[1:], strict=False):
        assert before.end <= after.start
    # Nobody enrolled: every stretch long enough to embed gets a session voice, spk_N; a
    # shorter one none, and says so.
    for delta in deltas:
        assert SPEAKER_ID.match(delta.speaker_label or "") or delta.reason == "too_short"
    assert sum(d.end - d.start for d in deltas if d.speaker_label) > 18.0  # of 23 s of speech
    assert all(d.display_name is None for d in deltas)
    # spk_N are numbered in order of first appearance.
    labels = [d.speaker_label for d in deltas if d.speaker_label]
    assert labels[0] == "spk_0"
    # The sample's first words are at 6.69 s (sample.rttm); the VAD pads turns by 30 ms. They
    # are 0.6 s alone: too few to found a session voice on.
    assert deltas[0].start == pytest.approx(6.69, abs=0.15)
    assert deltas[0].speaker_label is None and deltas[0].reason == "too_short"


def test_delta_messages_follow_the_protocol(engine, gallery):
    stream = diarizer(engine, gallery=gallery)

    messages = [d.message() for d in feed(stream, conversation()) + stream.flush()]

    assert messages
    for message in messages:
        assert message["type"] == "delta"
        assert message["text"] == ""
        assert set(message) <= {
            "type",
            "start",
            "end",
            "text",
            "speaker_label",
            "display_name",
            "reason",
        }
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
    stream = diarizer(engine, gallery=gallery)

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

    stream = diarizer(engine, gallery=gallery, is_live=is_live)

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
    stream = diarizer(engine, gallery=gallery, label_speakers=False)

    deltas = feed(stream, conversation()) + stream.flush()

    assert len(deltas) >= 3
    assert all(d.speaker_label is None and d.display_name is None for d in deltas)
    assert all("speaker_label" not in d.message() for d in deltas)
    assert stream.matched == set()


def test_flush_decides_what_is_still_undecided(engine):
    # Speech to the very end, no trailing silence: the VAD never ends the speech.
    speech = audio.clip([ENROLL_A])
    stream = diarizer(engine)

    deltas = feed(stream, speech)
    assert deltas[-1].end < len(speech) / SAMPLE_RATE - 1.0  # the last seconds wait
    deltas += stream.flush()

    assert deltas[0].start == pytest.approx(0.26, abs=0.1)
    assert deltas[-1].end == pytest.approx(len(speech) / SAMPLE_RATE, abs=0.04)
    for before, after in zip(deltas, deltas[1:], strict=False):
        assert after.start == before.end  # one voice's speech cut in pieces, nothing lost
    # The first pieces come before 2 s of the voice were heard: too few to found a session
    # voice on; from then on it is spk_0.
    labels = [d.speaker_label for d in deltas]
    first = labels.index("spk_0")
    assert all(d.reason == "too_short" for d in deltas[:first])
    assert set(labels[first:]) == {"spk_0"}
    assert deltas[first].start < 2.5
    assert stream.flush() == []


def test_flush_of_an_enrolled_voice_names_it(engine, gallery):
    stream = diarizer(engine, gallery=gallery)

    deltas = feed(stream, audio.clip([(18.6, 21.4)])) + stream.flush()  # A, not enrollment audio

    assert {d.speaker_label for d in deltas} == {"A"}
    assert {d.display_name for d in deltas} == {"Alice Example"}
    assert {d.reason for d in deltas} == {"enrolled_match"}


def test_no_delta_comes_later_than_the_latency_budget_and_none_is_revised(engine, gallery):
    """The sample at real-time pace in 0.5 s pieces: a delay is counted in audio time, from
    the end of the audio a delta covers to the end of the piece whose arrival sent it."""
    from django.conf import settings

    samples = audio.sample()
    stream = diarizer(engine, gallery=gallery)
    piece = SAMPLE_RATE // 2
    delays, deltas = [], []
    for offset in range(0, len(samples), piece):
        for delta in stream.feed(samples[offset : offset + piece]):
            delays.append(stream.received_s - delta.end)
            deltas.append(delta)

    assert deltas and max(delays) <= settings.STREAM_MAX_LATENCY_S + 0.5, max(delays)
    deltas += stream.flush()
    turns = turns_of(deltas)
    for before, after in zip(turns, turns[1:], strict=False):
        assert before.end <= after.start  # each delta is final: none covers sent audio again
    # A second voice's delta covers audio a turn's delta covers too (two people at once).
    for delta in deltas:
        if delta.reason == "continues_turn":
            assert any(t.start <= delta.start and delta.end <= t.end for t in turns), delta


def test_the_sample_streamed_at_real_time_pace_is_identified_within_15_percent_ier(engine, gallery):
    from pyannote.core import Annotation, Segment
    from pyannote.database.util import load_rttm
    from pyannote.metrics.identification import IdentificationErrorRate

    samples = audio.sample()
    stream = diarizer(engine, gallery=gallery)
    deltas = feed(stream, samples, chunk=SAMPLE_RATE // 2) + stream.flush()

    hypothesis = Annotation(uri="sample")
    for index, delta in enumerate(deltas):
        if delta.speaker_label is not None:
            hypothesis[Segment(delta.start, delta.end), index] = delta.speaker_label
    reference = load_rttm(str(audio.sample_rttm_path()))["sample"].rename_labels(
        {"speaker90": "A", "speaker91": "B"}
    )
    ier = IdentificationErrorRate()(reference, hypothesis)
    # Measured 14.8 % (issue 17's target is 15 %): what is left is B's turns at 7.55 and
    # 9.92 s and the overlap around 10.6 s and 18.2 s (bench/accuracy.py).
    assert ier <= 0.15, ier
    # Where both speak at 27.85-28.50 s (B finishing, A starting), both are named.
    both = {d.speaker_label for d in deltas if d.start < 28.4 and d.end > 28.0}
    assert both == {"A", "B"}
    # A change of speaker inside the audio of one step is split, not labelled as one voice.
    assert at(deltas, 16.0).speaker_label == "B" and at(deltas, 12.0).speaker_label == "A"


@pytest.mark.parametrize(
    ("samples", "overrides"),
    [
        # A step falls in the 300 ms the VAD waits before ending the speech.
        (
            lambda: np.concatenate([audio.clip([ENROLL_A]), audio.silence(1.0)]),
            {"step_s": 0.25},
        ),
        # The speech is still open when flush() pads and steps.
        (lambda: audio.clip([(21.9, 28.4)]), {"end_of_turn_ms": 3000}),
    ],
    ids=["step-then-end-of-speech", "step-then-flush"],
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
    first = diarizer(engine, gallery=gallery)
    second = diarizer(engine, gallery=gallery)

    by_100ms = feed(first, samples) + first.flush()
    by_odd_chunks = feed(second, samples, chunk=777) + second.flush()

    assert by_odd_chunks == by_100ms


def test_a_strangers_short_turn_between_an_enrolled_speakers_turns_is_not_given_their_id(
    engine, voiceprints
):
    # A speaks, a voice nobody enrolled says a few words (B's speech slowed to two thirds:
    # 1.2 s), A speaks again. Only A is enrolled.
    pause = audio.silence(0.2)
    stranger = audio.other_voice(audio.clip([(25.0, 25.8)]))
    samples = np.concatenate(
        [audio.clip([ENROLL_A]), pause, stranger, pause, audio.clip([(18.6, 21.4)])]
    )
    stranger_from = ENROLL_A[1] - ENROLL_A[0] + 0.2
    stranger_to = stranger_from + len(stranger) / SAMPLE_RATE
    stream = diarizer(engine, gallery=EnrolledGallery(["A"], voiceprints["A"][None]))

    deltas = feed(stream, samples, chunk=SAMPLE_RATE // 2) + stream.flush()

    during = [d for d in deltas if min(d.end, stranger_to) - max(d.start, stranger_from) > 0]
    assert during
    for delta in during:
        inside = min(delta.end, stranger_to) - max(delta.start, stranger_from)
        if inside > 0.5 * (delta.end - delta.start):
            assert delta.speaker_label != "A", delta
            assert delta.reason != "enrolled_match"
    assert any(d.speaker_label == "A" and d.end <= stranger_from for d in deltas)
    assert any(d.speaker_label == "A" and d.start >= stranger_to for d in deltas)


def test_the_first_speech_is_named_within_the_latency_budget_of_the_piece_that_held_it(
    engine, gallery
):
    # 0.3 s of silence, then A: the client sends 0.5 s pieces at real-time pace.
    samples = np.concatenate([audio.silence(0.3), audio.clip([ENROLL_A])])
    stream = diarizer(engine, gallery=gallery)
    piece = SAMPLE_RATE // 2

    named_by = None
    for index, offset in enumerate(range(0, len(samples), piece)):
        if any(d.speaker_label == "A" for d in stream.feed(samples[offset : offset + piece])):
            named_by = index
            break

    # The piece ending at 0.5 s holds the first speech; steps fall every 0.5 s of audio, so
    # audio 1.5 s old is decided by the piece that ends 1.5 s after that one.
    assert named_by is not None
    assert (named_by + 1) * 0.5 <= 0.5 + 1.5


def test_a_turn_that_ends_while_the_next_one_is_under_way_is_decided_whole(engine, gallery):
    # A, a pause longer than the VAD's end of turn, then B talking on: A's turn ends while
    # B's speech is still open.
    a_speech = audio.clip([ENROLL_A])
    samples = np.concatenate([a_speech, audio.silence(0.5), audio.clip([(14.6, 17.8)])])
    a_end = len(a_speech) / SAMPLE_RATE
    stream = diarizer(engine, gallery=gallery)

    deltas = feed(stream, samples, chunk=SAMPLE_RATE // 2) + stream.flush()

    over_a = [d for d in deltas if d.start < a_end - 0.2]
    assert over_a
    # Its last words are judged with the rest of the turn, not as a short stretch of their own.
    assert all(d.speaker_label == "A" for d in over_a if d.end - d.start > 0.05), over_a


def test_a_turn_first_heard_as_a_session_voice_is_named_once_its_speech_confirms_them(
    engine, voiceprints
):
    # B's voiceprint blurred (as a short, noisy enrollment would be): B's first words score
    # under the threshold and found a spk_N, the turn grown longer reaches it.
    rng = np.random.default_rng(0)
    blur = rng.standard_normal(len(voiceprints["B"]))
    blur -= (blur @ voiceprints["B"]) * voiceprints["B"]
    weak = voiceprints["B"] + 0.85 * blur / np.linalg.norm(blur)
    stream = diarizer(engine, gallery=EnrolledGallery(["B"], (weak / np.linalg.norm(weak))[None]))

    deltas = feed(stream, audio.clip([(21.9, 28.4)]), chunk=SAMPLE_RATE // 2) + stream.flush()

    labels = [d.speaker_label for d in deltas]
    assert labels[0] is not None and SPEAKER_ID.match(labels[0])
    named = labels.index("B")
    # Deltas already sent stay as they were; from the first B on, the turn is B's.
    assert all(label == "B" for label in labels[named:]), labels


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def directions(voiceprint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors orthogonal to the voiceprint and to each other."""
    rng = np.random.default_rng(0)
    first = rng.standard_normal(len(voiceprint))
    first -= (first @ voiceprint) * voiceprint
    first = unit(first)
    second = rng.standard_normal(len(voiceprint))
    second -= (second @ voiceprint) * voiceprint + (second @ first) * first
    return first, unit(second)


def test_a_session_voice_is_found_to_be_a_heard_speaker_only_when_it_sounds_like_them_as_heard(
    engine, voiceprints
):
    a = voiceprints["A"]
    away, aside = directions(a)
    stream = diarizer(engine, gallery=EnrolledGallery(["A"], a[None]))
    # How the session has heard A, and two session voices whose best enrolled match is A
    # at 0.70: one made of A's weaker words (close to A as heard), one a stranger's.
    stream._enrolled_voices["A"] = unit(a + 0.5 * aside)
    stream._voices = [unit(0.7 * a + 0.714 * aside), unit(0.7 * a + 0.714 * away)]
    stream._voice_s = [3.0, 3.0]

    assert stream._founded_on_weaker(0, "A", score=0.8)
    assert not stream._founded_on_weaker(1, "A", score=0.8)
    # A stretch under the identification threshold is no ground to find either.
    assert not stream._founded_on_weaker(0, "A", score=0.7)


def test_a_stretch_on_a_heard_speakers_row_is_theirs_under_the_identification_threshold(
    engine, voiceprints
):
    a = voiceprints["A"]
    away, aside = directions(a)
    # A's stretch at 0.70 against the voiceprint (above the turn threshold, under the
    # identification threshold), not close to A as heard so far either.
    evidence = unit(0.7 * a + 0.714 * away)
    window = [(0, int(1.5 * SAMPLE_RATE))]

    def judged(voice: int) -> Delta:
        stream = diarizer(engine, gallery=EnrolledGallery(["A"], a[None]))
        stream._enrolled_voices["A"] = unit(a + 0.5 * aside)
        return stream._judge(0.0, 1.5, voice, window[0], 1.5, window, evidence[None])

    # The frames chose A's row (the voiceprint blended with A as heard): A's.
    assert judged(0).speaker_label == "A"
    # The frames chose a voice not heard yet: the stretch alone does not identify A.
    assert judged(1).speaker_label != "A"


def two_at_once(overlap_s: float) -> np.ndarray:
    """A (3.85 s) then B (5 s), B starting ``overlap_s`` before A has finished."""
    first, second = audio.clip([ENROLL_A]), audio.clip([ENROLL_B])
    joined = np.zeros(len(first) + len(second) - int(overlap_s * SAMPLE_RATE), np.float32)
    joined[: len(first)] += first
    joined[len(joined) - len(second) :] += second
    return joined


def test_where_two_speak_at_once_both_are_named_each_continuing_their_turn(engine, gallery):
    # A speaks alone to 3.25 s, both to 3.85 s, B alone after.
    stream = diarizer(engine, gallery=gallery)

    deltas = feed(stream, two_at_once(0.6), chunk=SAMPLE_RATE // 2) + stream.flush()

    during = {d.speaker_label for d in deltas if d.start < 3.7 and d.end > 3.4}
    assert during == {"A", "B"}
    second = [d for d in deltas if d.reason == "continues_turn"]
    assert second and all(3.0 <= d.start < d.end <= 4.1 for d in second)
    # Overlapped audio is never matched: a second voice is named only by the turn it goes on
    # with, and the turns themselves are still one voice at a time.
    turns = turns_of(deltas)
    assert all(before.end <= after.start for before, after in zip(turns, turns[1:], strict=False))


def test_without_an_overlap_detector_a_stream_names_one_voice_at_a_time(engine, gallery):
    stream = diarizer(engine, gallery=gallery, hear_overlap=False)

    deltas = feed(stream, two_at_once(0.6), chunk=SAMPLE_RATE // 2) + stream.flush()

    assert "continues_turn" not in {d.reason for d in deltas}
    assert all(before.end <= after.start for before, after in zip(deltas, deltas[1:], strict=False))


def seconds(value: float) -> int:
    return int(value * SAMPLE_RATE)


def test_overlap_waits_for_the_turn_of_its_second_voice_while_the_budget_allows(engine):
    """Overlap at 1.0-1.4 s decided with A's turn; B's turn comes at the next step."""
    live = {"A", "B"}
    stream = diarizer(engine, is_live=lambda speaker_id: speaker_id in live)
    heard = [[(1.0, 1.4)], [], []]
    stream._overlapped = lambda now, ready: heard.pop(0)  # type: ignore[method-assign]
    a_turn = Delta(0.2, 1.4, "A", "Alice Example", "enrolled_match")
    b_turn = Delta(1.5, 2.4, "B", "Bob Example", "enrolled_match")

    assert stream._second_voices([a_turn], seconds(2.5), seconds(1.4)) == []
    assert stream._second_voices([b_turn], seconds(3.0), seconds(2.4)) == [
        Delta(1.0, 1.4, "B", "Bob Example", "continues_turn")
    ]
    assert stream._open_overlap == []
    assert stream._second_voices([], seconds(3.5), seconds(3.0)) == []


@pytest.mark.parametrize(
    ("b_turn", "now", "why"),
    [
        (Delta(2.1, 3.0, "B", "Bob Example", "enrolled_match"), 3.5, "B starts 0.7 s after"),
        (Delta(1.5, 2.4, "B", "Bob Example", "enrolled_match"), 4.0, "past the latency budget"),
        (Delta(1.5, 2.4, "B", "Bob Example", "enrolled_match"), 3.0, "B has been erased"),
    ],
)
def test_overlap_names_no_second_voice_when(engine, b_turn, now, why):
    live = {"A"} if "erased" in why else {"A", "B"}
    stream = diarizer(engine, is_live=lambda speaker_id: speaker_id in live)
    heard = [[(1.0, 1.4)], []]
    stream._overlapped = lambda now, ready: heard.pop(0)  # type: ignore[method-assign]
    a_turn = Delta(0.2, 1.4, "A", "Alice Example", "enrolled_match")

    stream._second_voices([a_turn], seconds(1.9), seconds(1.4))

    assert stream._second_voices([b_turn], seconds(now), seconds(b_turn.end)) == [], why
