"""Accuracy benchmark: speaker identification and diarization with the service's real models.

Uses the Resemblyzer engine and Silero VAD directly (no Django, database or Redis) and
LibriSpeech from ../shared/data/librispeech-dev (5 speakers, 10 utterances each).

1. Identification. Every speaker is enrolled from ONE utterance (the first by name; the
   voiceprint of its speech-only samples, as enrollment computes it) and every other
   utterance is scored against all enrolled voiceprints the same way (utterance level):
   closed-set accuracy (best score is the true speaker), the verification equal error rate
   (genuine: an utterance against its own speaker; impostor: against every other) with its
   threshold, and the false accept / false reject rates at the service's default
   identification threshold (``DiarizationOptions().threshold``).
2. Diarization. Seeded synthetic conversations of 2 and 3 speakers (~60 s): random 3-8 s
   pieces of the utterances NOT used for enrollment, turns alternating between speakers,
   0.3 s of silence between turns. LibriSpeech utterances hold pauses that are not speech,
   so the reference is each piece's Silero speech regions (pad 100 ms, as the service's
   diarization uses) labelled with its speaker, not the whole piece; the figures therefore
   measure who-spoke-when far more than voice activity. DER with no one enrolled; IER with
   the conversation's speakers enrolled from their held-out first utterance; the fraction
   of conversations whose number of hypothesis labels equals the true speaker count.
2b. Short turns and a never-enrolled speaker (section ``short-turns``, issue 17). Seeded
   conversations of about 60 s with 3 or 4 speakers, one of whom is never enrolled (which
   one rotates through the data set's speakers); everyone else in the data set is enrolled,
   present or not, alternately from their first utterance alone or from their first two.
   30 % of turns are 0.7-2 s, the rest 2-6 s, each cut at one of its utterance's speech
   onsets from utterances other than the first two; pauses 0.1-0.6 s. The reference is built
   as in 2. Each conversation is scored in batch (``diarize`` on the whole recording, as a
   node does) and streaming (a ``StreamDiarizer`` at the service's STREAM_ settings fed
   0.5 s pieces, its deltas the hypothesis): DER with no one enrolled; IER with the gallery,
   where the never-enrolled speaker and every label that is no enrolled id count as one
   class (a stranger called ``spk_N`` is right, an enrolled speaker called ``spk_N`` or
   another's id is confusion); and the share of the never-enrolled speaker's reference
   speech that carries an enrolled speaker's id, over all conversations. The same
   conversations (the same turns) are then scored noisier: each piece reverberated with a
   synthetic room (RT60 0.3-0.6 s) and a continuous track of pink noise and a six-voice
   babble underneath at 10-20 dB SNR per piece; enrollment stays clean. Seconds per stated
   per-segment reason (``reason`` or ``unlabelled_reason``) are reported when the engine
   gives them. The issue's targets are printed under each table.
3. The pyannote.audio wheel's sample against its RTTM: DER with no one enrolled, IER with
   both speakers enrolled from clips of at most 5 s of the same recording.
4. The enrollment's consent voice check, before (cosine of the two averaged voiceprints,
   refuse below 0.72, review below 0.80) and after (``voice.scoring.voice_match_score`` at
   the configured PREFLIGHT_CONSENT_MATCH_THRESHOLD / _WARN). Pairs: on LibriSpeech every
   ordered pair of two utterances, one as reference and one as consent (genuine: one
   speaker, impostor: two); the same with the consent cut to its first 1.5 s of speech;
   the same with the consent low-passed to 3.4 kHz (a telephone consent against a wideband
   reference, two references per speaker); on the pyannote sample each speaker's reference
   clip against both speakers' consent clips (``tests/audio.py``), and every ordered pair
   of six shorter clips (three per speaker, 2.6-3.6 s of speech). Rates: false accept =
   impostor passes without review (score >= review threshold), false reject = genuine held
   or refused, review = in [refuse, review). The default thresholds were chosen looking at
   all of LibriSpeech, so the table also gives leave-one-speaker-out figures: thresholds
   calibrated (``enrollment.calibration.thresholds_for``, target false-accept rate 0) on the
   pairs of the other four speakers, rates counted on the pairs with the held-out speaker.
   Also the narrow-band rise (mean change of every LibriSpeech pair's window match when
   both recordings are low-passed to each band edge of ``voice.scoring.NARROW_BAND_RISE``,
   next to the shipped value) and the scoring's cost.

DER and IER are pyannote.metrics', at collar 0 and 0.5 s (±250 ms around reference
boundaries), overlapped speech scored.

    .venv/bin/python bench/accuracy.py
    .venv/bin/python bench/accuracy.py --data ../shared/data/librispeech-dev --json out.json
    .venv/bin/python bench/accuracy.py --sections consent
    .venv/bin/python bench/accuracy.py --sections short-turns --short-turn-conversations 6
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import fftconvolve
from silero_vad import load_silero_vad

# pyannote.audio (imported for the sample's path) refuses to import without this decided.
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
# Only to read the configured thresholds: the settings refuse the development key otherwise.
os.environ.setdefault("SCAIECHO_ENV", "local")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyannote.core import Annotation, Segment, Timeline  # noqa: E402
from pyannote.database.util import load_rttm  # noqa: E402
from pyannote.metrics.diarization import DiarizationErrorRate  # noqa: E402
from pyannote.metrics.identification import IdentificationErrorRate  # noqa: E402

from bench.common import LIBRISPEECH, RATE, decode  # noqa: E402
from config import settings as service_settings
from diarization.engine import DiarizationOptions, as_result, diarize
from diarization.segmentation import BundledSegmentation, speech_detector
from diarization.streaming import StreamDiarizer, StreamSettings
from enrollment.calibration import PairScores, rates_at, thresholds_for
from tests import audio  # noqa: E402
from voice.engines import EmbeddingEngine, load_engine
from voice.gallery import EnrolledGallery
from voice.scoring import (
    NARROW_BAND_RISE,
    VoiceSample,
    band_limit,
    effective_bandwidth_hz,
    voice_match_score,
    window_match,
)
from voice.vad import SileroVad, SpeechRegion, speech_only

DIARIZATION_PAD_MS = 100  # the VAD padding the service's diarization uses
COLLARS = (0.0, 0.5)
PIECE_S = (3.0, 8.0)
GAP_S = 0.3
SAMPLE_ENROLLMENT = {"speaker90": (10.6, 14.45), "speaker91": (21.9, 26.9)}
SECTIONS = ("identification", "diarization", "short-turns", "sample", "consent")
# The short-turn conversations (issue 17).
SHORT_TURN_SHARE = 0.3
SHORT_TURN_S = (0.7, 2.0)
LONG_TURN_S = (2.0, 6.0)
SHORT_GAP_S = (0.1, 0.6)
ONSET_LEAD = int(0.05 * RATE)  # a piece cut at a speech onset starts this much before it
ENROLLMENT_UTTERANCES = 2  # the first two of each speaker: enrollment only, never in a turn
STREAM_PIECE_S = 0.5  # what a real-time client sends at a time
NOT_ENROLLED = "(not enrolled)"  # IER's one label for every voice no enrolled id names
RT60_S = (0.3, 0.6)
SNR_DB = (10.0, 20.0)
BABBLE_VOICES = 6
TARGET_BATCH_IER = 0.08  # at +-250 ms
TARGET_STREAM_GAP = 0.05  # streaming IER at +-250 ms at most this above batch's
TARGET_STRANGER_SHARE = 0.02

Scores = dict[str, dict[str, float]]  # collar -> rate and its components


def short_turn_length(rng: np.random.Generator) -> float:
    return float(rng.uniform(*(SHORT_TURN_S if rng.random() < SHORT_TURN_SHARE else LONG_TURN_S)))


@dataclass(frozen=True)
class Utterance:
    speaker: str
    name: str
    samples: np.ndarray
    speech_s: float
    voiceprint: np.ndarray
    speech_starts: tuple[int, ...]  # sample index where each of its speech regions begins


@dataclass(frozen=True)
class TurnTaking:
    """How a synthetic conversation's turns are drawn."""

    piece_s: Callable[[np.random.Generator], float]
    gap_s: Callable[[np.random.Generator], float]
    # Cut each piece at the start of one of the utterance's speech regions: a short piece cut
    # anywhere would often be mostly pause.
    at_speech_onset: bool = False


# The diarization section's conversations: 3-8 s turns, 0.3 s apart.
ALTERNATING = TurnTaking(piece_s=lambda rng: float(rng.uniform(*PIECE_S)), gap_s=lambda _: GAP_S)
# The short-turn section's: 30 % of turns 0.7-2 s, the rest 2-6 s, 0.1-0.6 s apart.
SHORT_TURNS = TurnTaking(
    piece_s=short_turn_length,
    gap_s=lambda rng: float(rng.uniform(*SHORT_GAP_S)),
    at_speech_onset=True,
)


def service_stream_settings() -> StreamSettings:
    """The streaming session's tuning at the service's defaults (``config.settings``).

    Filled field by field, so a field the streaming engine gains is read from its
    ``STREAM_<NAME>`` (or ``DIARIZE_<NAME>``) setting, or keeps its own default.
    """
    named = {
        "threshold": service_settings.DIARIZE_IDENTIFICATION_THRESHOLD,
        "min_label_s": service_settings.DIARIZE_MIN_LABEL_S,
    }
    values: dict[str, Any] = {}
    for field in fields(StreamSettings):
        setting = field.name.upper()
        if field.name in named:
            values[field.name] = named[field.name]
        elif hasattr(service_settings, f"STREAM_{setting}"):
            values[field.name] = getattr(service_settings, f"STREAM_{setting}")
        elif hasattr(service_settings, f"DIARIZE_{setting}"):
            values[field.name] = getattr(service_settings, f"DIARIZE_{setting}")
        elif field.default is MISSING and field.default_factory is MISSING:
            raise SystemExit(f"StreamSettings.{field.name}: no STREAM_ or DIARIZE_ setting")
    return StreamSettings(**values)


def labelled_annotation(segments: list[dict[str, Any]], uri: str) -> Annotation:
    """The labelled segments (job result segments or stream deltas) as an annotation."""
    annotation = Annotation(uri=uri)
    for index, segment in enumerate(segments):
        if segment.get("speaker_label") is not None and segment["end"] > segment["start"]:
            annotation[Segment(segment["start"], segment["end"]), index] = segment["speaker_label"]
    return annotation


@dataclass(frozen=True)
class Conversation:
    name: str
    speakers: list[str]
    samples: np.ndarray
    reference: Annotation


class Models:
    def __init__(self) -> None:
        self.engine: EmbeddingEngine = load_engine("resemblyzer")
        self.vad = SileroVad()
        self.options = DiarizationOptions()
        self.stream_settings = service_stream_settings()
        # Speech and overlap as the service's nodes find them.
        self.detector = speech_detector(
            service_settings.DIARIZE_SEGMENTATION_MODEL,
            service_settings.DIARIZE_SEGMENTATION_STEP_S,
            DIARIZATION_PAD_MS,
        )

    def voiceprint(
        self, samples: np.ndarray, regions: list[SpeechRegion] | None = None
    ) -> tuple[np.ndarray, float]:
        """The enrollment voiceprint of a recording's speech (default VAD), and that speech's s."""
        if regions is None:
            regions = self.vad.speech_regions(samples)
        speech = speech_only(samples, regions)
        vector, _ = self.engine.voiceprint(speech)
        return vector, speech.size / RATE

    def batch_segments(
        self, samples: np.ndarray, gallery: EnrolledGallery | None
    ) -> list[dict[str, Any]]:
        """The job result's segments, as a node computes them for a whole recording."""
        heard = self.detector.detect(samples)
        result = diarize(
            samples,
            heard.speech,
            self.engine,
            gallery,
            self.options,
            overlap=heard.overlap,
            chunks=heard.chunks,
        )
        return list(as_result(result, self.options)["segments"])

    def stream_segments(
        self, samples: np.ndarray, gallery: EnrolledGallery | None
    ) -> list[dict[str, Any]]:
        """The deltas of a streaming session fed ``STREAM_PIECE_S`` pieces, as fast as it takes
        them (what it decides depends on the audio, not on the wall clock)."""
        stream = StreamDiarizer(
            self.engine,
            load_silero_vad(),
            self.stream_settings,
            gallery=gallery,
            display_names={},
            label_speakers=True,
            is_live=lambda speaker_id: True,
            overlap=self.detector if isinstance(self.detector, BundledSegmentation) else None,
        )
        piece = int(STREAM_PIECE_S * RATE)
        deltas = []
        for offset in range(0, samples.size, piece):
            deltas.extend(stream.feed(samples[offset : offset + piece]))
        deltas.extend(stream.flush())
        return [delta.message() for delta in deltas]


def load_speakers(data: Path, models: Models) -> dict[str, list[Utterance]]:
    speakers = {}
    for folder in sorted(d for d in data.iterdir() if d.is_dir()):
        utterances = []
        for path in sorted(folder.rglob("*.flac"), key=lambda p: p.name):
            samples = decode(path)
            regions = models.vad.speech_regions(samples)
            vector, speech_s = models.voiceprint(samples, regions)
            starts = tuple(r.start for r in regions)
            utterances.append(Utterance(folder.name, path.stem, samples, speech_s, vector, starts))
        speakers[folder.name] = utterances
    if not speakers:
        raise SystemExit(f"no speaker folders under {data}")
    return speakers


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """EER and its threshold: where the false accept and false reject rates cross, linearly
    interpolated between the two scores that bracket the crossing."""
    scores = np.unique(np.concatenate([genuine, impostor]))
    thresholds = np.append(scores, np.nextafter(scores[-1], np.inf))  # rejects everything
    far = (impostor[None, :] >= thresholds[:, None]).mean(axis=1)
    frr = (genuine[None, :] < thresholds[:, None]).mean(axis=1)
    gap = frr - far  # rises from -FAR(lowest score) to 1
    i = int(np.argmax(gap >= 0))  # > 0: every impostor scores at least the lowest score
    w = -gap[i - 1] / (gap[i] - gap[i - 1])
    eer = far[i - 1] + w * (far[i] - far[i - 1])
    return float(eer), float(thresholds[i - 1] + w * (thresholds[i] - thresholds[i - 1]))


def identification(speakers: dict[str, list[Utterance]], threshold: float) -> dict[str, Any]:
    ids = list(speakers)
    gallery = EnrolledGallery(ids, np.stack([speakers[s][0].voiceprint for s in ids]))
    tests = [u for s in ids for u in speakers[s][1:]]
    scores = gallery.scores(np.stack([u.voiceprint for u in tests]))
    truth = np.asarray([ids.index(u.speaker) for u in tests])
    own = np.eye(len(ids), dtype=bool)[truth]
    genuine, impostor = scores[own], scores[~own]
    correct = scores.argmax(axis=1) == truth
    eer, eer_threshold = equal_error_rate(genuine, impostor)
    per_speaker = {
        s: {
            "enrollment_utterance": speakers[s][0].name,
            "enrollment_speech_s": round(speakers[s][0].speech_s, 2),
            "correct": int(correct[truth == k].sum()),
            "trials": int((truth == k).sum()),
            "genuine_mean": round(float(scores[truth == k, k].mean()), 4),
            "impostor_max": round(float(np.delete(scores[truth == k], k, axis=1).max()), 4),
        }
        for k, s in enumerate(ids)
    }
    return {
        "trials": len(tests),
        "accuracy": float(correct.mean()),
        "eer": eer,
        "eer_threshold": eer_threshold,
        "default_threshold": threshold,
        "far_at_default": float((impostor >= threshold).mean()),
        "frr_at_default": float((genuine < threshold).mean()),
        "genuine_trials": int(genuine.size),
        "impostor_trials": int(impostor.size),
        "per_speaker": per_speaker,
    }


class Room:
    """Noise and reverberation for the noisier conversations, drawn from a generator of its
    own so that the turns stay those of the clean conversation.

    Each piece is convolved with a synthetic room impulse response of its own (a direct path,
    then exponentially decaying noise with an RT60 drawn from ``RT60_S``); one continuous noise
    track (pink noise plus a babble of ``BABBLE_VOICES`` other utterances, equal power) runs
    under the whole conversation, scaled under each piece (and the pause after it) to an SNR
    drawn from ``SNR_DB`` against that piece's reverberated speech.
    """

    def __init__(self, babble_sources: list[np.ndarray], seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.babble_sources = babble_sources

    def reverberate(self, piece: np.ndarray) -> np.ndarray:
        rt60 = self.rng.uniform(*RT60_S)
        t = np.arange(int(rt60 * RATE)) / RATE
        # 60 dB of amplitude decay (a factor of 1000) over rt60 seconds.
        response = self.rng.standard_normal(t.size) * np.exp(-np.log(1000.0) * t / rt60)
        response *= 0.3 / np.sqrt(np.sum(response**2))  # the tail's energy below the direct path
        response[0] = 1.0
        wet = fftconvolve(piece, response)[: piece.size]
        return (wet * rms(piece) / max(rms(wet), 1e-9)).astype(np.float32)

    def snr_db(self) -> float:
        return float(self.rng.uniform(*SNR_DB))

    def noise(self, length: int) -> np.ndarray:
        """Unit-power pink noise and babble, mixed at equal power."""
        spectrum = np.fft.rfft(self.rng.standard_normal(length))
        spectrum /= np.sqrt(np.maximum(np.fft.rfftfreq(length, 1 / RATE), 20.0))  # 1/f power
        pink = np.fft.irfft(spectrum, length)
        babble = np.zeros(length)
        for _ in range(BABBLE_VOICES):
            source = self.babble_sources[int(self.rng.integers(len(self.babble_sources)))]
            voice = np.resize(np.roll(source, int(self.rng.integers(source.size))), length)
            babble += voice / max(rms(voice), 1e-9)
        return (pink / rms(pink) + babble / max(rms(babble), 1e-9)) / np.sqrt(2.0)


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0


def build_conversation(
    name: str,
    speakers: list[str],
    pools: dict[str, list[Utterance]],
    rng: np.random.Generator,
    duration_s: float,
    models: Models,
    turns: TurnTaking,
    room: Room | None = None,
) -> Conversation:
    """Turns alternate between speakers (each speaks once before any repeats).

    The reference is each piece's Silero speech regions in the clean piece, whatever ``room``
    then does to the audio.
    """
    reference = Annotation(uri=name)
    chunks: list[np.ndarray] = []
    levels: list[tuple[int, float]] = []  # where each piece begins, and its noise's amplitude
    cursor, previous = 0, ""
    first_round = [str(s) for s in rng.permutation(speakers)]
    while cursor < duration_s * RATE:
        if first_round:
            speaker = first_round.pop(0)
        else:
            speaker = str(rng.choice([s for s in speakers if s != previous]))
        pool = pools[speaker]
        utterance = pool[int(rng.integers(len(pool)))]
        samples = utterance.samples
        length = min(int(turns.piece_s(rng) * RATE), samples.size)
        if turns.at_speech_onset:
            onsets = [s for s in utterance.speech_starts if s + length <= samples.size] or [0]
            offset = max(0, onsets[int(rng.integers(len(onsets)))] - ONSET_LEAD)
        else:
            offset = int(rng.integers(samples.size - length + 1))
        piece = samples[offset : offset + length]
        regions = models.vad.speech_regions(piece, pad_ms=DIARIZATION_PAD_MS)
        for region in regions:
            segment = Segment((cursor + region.start) / RATE, (cursor + region.end) / RATE)
            reference[segment] = speaker
        if room is not None:
            piece = room.reverberate(piece)
            speech_level = rms(speech_only(piece, regions)) or rms(piece)
            levels.append((cursor, speech_level / 10 ** (room.snr_db() / 20)))
        gap = np.zeros(int(turns.gap_s(rng) * RATE), dtype=np.float32)
        chunks.extend([piece, gap])
        cursor += piece.size + gap.size
        previous = speaker
    audio = np.concatenate(chunks[:-1])
    if room is not None:
        amplitude = np.zeros(audio.size)
        for (begin, level), (after, _) in zip(
            levels, [*levels[1:], (audio.size, 0.0)], strict=True
        ):
            amplitude[begin:after] = level
        audio = (audio + amplitude * room.noise(audio.size)).astype(np.float32)
    return Conversation(name, speakers, audio, reference)


def error_rates(
    metric: type[IdentificationErrorRate],  # DiarizationErrorRate is one
    reference: Annotation,
    hypothesis: Annotation,
    duration_s: float,
) -> Scores:
    uem = Timeline([Segment(0.0, duration_s)])
    out = {}
    for collar in COLLARS:
        detail = metric(collar=collar)(reference, hypothesis, uem=uem, detailed=True)
        total = max(detail["total"], 1e-9)
        out[str(collar)] = {
            "rate": float(detail[metric.metric_name()]),
            "missed": detail["missed detection"] / total,
            "false_alarm": detail["false alarm"] / total,
            "confusion": detail["confusion"] / total,
        }
    return out


def evaluate(
    models: Models,
    samples: np.ndarray,
    reference: Annotation,
    gallery: EnrolledGallery,
    streaming: bool = False,
) -> dict[str, Any]:
    """DER with no one enrolled, IER with ``gallery``, and the estimated speaker count; of the
    batch result, or of the deltas of a stream fed ``STREAM_PIECE_S`` pieces."""
    uri, duration_s = reference.uri, samples.size / RATE
    segments_of = models.stream_segments if streaming else models.batch_segments
    anonymous = labelled_annotation(segments_of(samples, None), uri)
    identified = labelled_annotation(segments_of(samples, gallery), uri)
    return {
        "speakers": len(reference.labels()),
        "estimated_speakers": len(anonymous.labels()),
        "der": error_rates(DiarizationErrorRate, reference, anonymous, duration_s),
        "ier": error_rates(IdentificationErrorRate, reference, identified, duration_s),
        "identified_labels": sorted(identified.labels()),
    }


def mean_scores(results: list[dict[str, Any]], key: str) -> Scores:
    return {
        collar: {
            part: float(np.mean([r[key][collar][part] for r in results]))
            for part in results[0][key][collar]
        }
        for collar in results[0][key]
    }


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "conversations": len(results),
        "der": mean_scores(results, "der"),
        "ier": mean_scores(results, "ier"),
        "speaker_count_right": float(
            np.mean([r["estimated_speakers"] == r["speakers"] for r in results])
        ),
    }


def diarization(
    speakers: dict[str, list[Utterance]],
    models: Models,
    conversations: int,
    duration_s: float,
    seed: int,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    ids = list(speakers)
    pools = {s: utterances[1:] for s, utterances in speakers.items()}
    results = []
    for index in range(conversations):
        count = min(2 + index % 2, len(ids))
        chosen = sorted(str(s) for s in rng.choice(ids, size=count, replace=False))
        conversation = build_conversation(
            f"conv{index:02d}", chosen, pools, rng, duration_s, models, ALTERNATING
        )
        vectors = np.stack([speakers[s][0].voiceprint for s in conversation.speakers])
        gallery = EnrolledGallery(conversation.speakers, vectors)
        result = evaluate(models, conversation.samples, conversation.reference, gallery)
        results.append(
            {
                "name": conversation.name,
                "speaker_ids": chosen,
                "duration_s": conversation.samples.size / RATE,
            }
            | result
        )
    conditions = {}
    for count in sorted({r["speakers"] for r in results}):
        subset = [r for r in results if r["speakers"] == count]
        conditions[f"{count} speakers"] = summarise(subset)
    conditions["all"] = summarise(results)
    return {"conversations": results, "conditions": conditions}


@dataclass(frozen=True)
class ShortTurnConversation:
    conversation: Conversation
    stranger: str  # the speaker of the conversation no one enrolled
    gallery: EnrolledGallery  # every speaker of the data set but the stranger
    single_utterance: list[str]  # enrolled speakers whose voiceprint is of one utterance


def short_turn_conversations(
    speakers: dict[str, list[Utterance]],
    models: Models,
    conversations: int,
    duration_s: float,
    seed: int,
    noisy: bool,
) -> list[ShortTurnConversation]:
    """The same conversations clean or noisy: only the room draws from another generator.

    Conversation ``i`` has 3 or 4 speakers; the never-enrolled one rotates through the data
    set's speakers. Everyone else in the data set is enrolled (present or not), alternately
    from their first utterance alone or from their first two (turns use neither).
    """
    rng = np.random.default_rng(seed)
    ids = list(speakers)
    pools = {s: utterances[ENROLLMENT_UTTERANCES:] for s, utterances in speakers.items()}
    two_utterances = {
        s: models.voiceprint(np.concatenate([u.samples for u in us[:ENROLLMENT_UTTERANCES]]))[0]
        for s, us in speakers.items()
    }
    babble = [u.samples for us in speakers.values() for u in us]
    built = []
    for index in range(conversations):
        stranger = ids[index % len(ids)]
        others = [s for s in ids if s != stranger]
        count = min(3 + index % 2, len(ids))
        present = sorted(
            [stranger, *(str(s) for s in rng.choice(others, size=count - 1, replace=False))]
        )
        room = Room(babble, seed=seed * 1000 + index) if noisy else None
        conversation = build_conversation(
            f"turns{index:02d}", present, pools, rng, duration_s, models, SHORT_TURNS, room
        )
        single = [s for k, s in enumerate(others) if (index + k) % 2 == 0]
        vectors = np.stack(
            [speakers[s][0].voiceprint if s in single else two_utterances[s] for s in others]
        )
        built.append(
            ShortTurnConversation(conversation, stranger, EnrolledGallery(others, vectors), single)
        )
    return built


def identification_scores(
    reference: Annotation,
    hypothesis: Annotation,
    stranger: str,
    enrolled: list[str],
    duration_s: float,
) -> dict[str, Any]:
    """IER where the stranger's reference and every label that is no enrolled id are one
    class (a stranger called ``spk_N`` is right, an enrolled speaker called ``spk_N`` is not),
    and the seconds of the stranger's speech that carry an enrolled speaker's id."""
    anonymous = {label: NOT_ENROLLED for label in hypothesis.labels() if label not in enrolled}
    ier = error_rates(
        IdentificationErrorRate,
        reference.rename_labels(mapping={stranger: NOT_ENROLLED}),
        hypothesis.rename_labels(mapping=anonymous),
        duration_s,
    )
    truth = reference.label_timeline(stranger).support()
    claimed = Timeline(
        [
            segment
            for segment, _, label in hypothesis.itertracks(yield_label=True)
            if label in enrolled
        ]
    ).support()
    return {
        "ier": ier,
        "stranger_speech_s": truth.duration(),
        "stranger_attributed_s": truth.crop(claimed, mode="intersection").duration(),
        "stranger_named_as": sorted(
            {
                label
                for segment, _, label in hypothesis.itertracks(yield_label=True)
                if label in enrolled and truth.crop(segment, mode="intersection")
            }
        ),
    }


def reason_seconds(segments: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per stated reason (``reason``, or ``unlabelled_reason`` on unlabelled ones)."""
    out: dict[str, float] = {}
    for segment in segments:
        reason = segment.get("reason") or segment.get("unlabelled_reason")
        if reason:
            key = f"{'labelled' if segment.get('speaker_label') else 'unlabelled'}: {reason}"
            out[key] = out.get(key, 0.0) + segment["end"] - segment["start"]
    return out


def score_short_turns(models: Models, case: ShortTurnConversation) -> dict[str, Any]:
    conversation = case.conversation
    samples, reference = conversation.samples, conversation.reference
    duration_s = samples.size / RATE
    enrolled = list(case.gallery.speaker_ids)
    out: dict[str, Any] = {
        "name": conversation.name,
        "speaker_ids": conversation.speakers,
        "stranger": case.stranger,
        "single_utterance_enrolled": [
            s for s in case.single_utterance if s in conversation.speakers
        ],
        "duration_s": duration_s,
    }
    for mode, segments_of in (("batch", models.batch_segments), ("stream", models.stream_segments)):
        started = time.perf_counter()
        anonymous = segments_of(samples, None)
        identified = segments_of(samples, case.gallery)
        out[mode] = {
            "der": error_rates(
                DiarizationErrorRate,
                reference,
                labelled_annotation(anonymous, conversation.name),
                duration_s,
            ),
            **identification_scores(
                reference,
                labelled_annotation(identified, conversation.name),
                case.stranger,
                enrolled,
                duration_s,
            ),
            "reasons_s": reason_seconds(identified),
            "compute_rtf": (time.perf_counter() - started) / (2 * duration_s),
        }
    return out


def short_turns(
    speakers: dict[str, list[Utterance]],
    models: Models,
    conversations: int,
    duration_s: float,
    seed: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for condition, noisy in (("clean", False), ("noisy", True)):
        cases = short_turn_conversations(speakers, models, conversations, duration_s, seed, noisy)
        results = [score_short_turns(models, case) for case in cases]
        summary: dict[str, Any] = {}
        for mode in ("batch", "stream"):
            rows = [r[mode] for r in results]
            stranger_s = sum(r["stranger_speech_s"] for r in rows)
            reasons: dict[str, float] = {}
            for row in rows:
                for reason, seconds in row["reasons_s"].items():
                    reasons[reason] = reasons.get(reason, 0.0) + seconds
            summary[mode] = {
                "der": mean_scores(rows, "der"),
                "ier": mean_scores(rows, "ier"),
                "stranger_speech_s": stranger_s,
                "stranger_attributed_s": sum(r["stranger_attributed_s"] for r in rows),
                "stranger_share": sum(r["stranger_attributed_s"] for r in rows)
                / max(stranger_s, 1e-9),
                "reasons_s": reasons,
                "compute_rtf": float(np.median([r["compute_rtf"] for r in rows])),
            }
        out[condition] = {"conversations": results, "summary": summary}
    return out


def pyannote_sample(models: Models) -> dict[str, Any]:
    samples = audio.sample()
    reference = load_rttm(str(audio.sample_rttm_path()))["sample"]
    ids = list(SAMPLE_ENROLLMENT)
    vectors = np.stack([models.voiceprint(audio.clip([SAMPLE_ENROLLMENT[s]]))[0] for s in ids])
    gallery = EnrolledGallery(ids, vectors)
    return evaluate(models, samples, reference, gallery) | {
        "stream": evaluate(models, samples, reference, gallery, streaming=True)
    }


BEFORE_THRESHOLDS = (0.72, 0.80)  # the consent check's refuse / review thresholds before
TELEPHONE_EDGE_HZ = 3_400.0
BRIEF_CONSENT_S = 1.5  # a consent of one short sentence: its first 1.5 s of speech
# Non-overlapping single-speaker stretches of the sample, 2.6-3.6 s of speech each.
SAMPLE_SHORT_CLIPS = {
    "speaker90": ([(10.6, 14.45)], [(18.6, 21.4)], audio.SPEAKER_A_CONSENT),
    "speaker91": ([(21.9, 25.0)], [(25.0, 28.4)], audio.SPEAKER_B_CONSENT),
}
SAMPLE_CONSENT_PAIRS = {
    "speaker90": (audio.SPEAKER_A, audio.SPEAKER_A_CONSENT),
    "speaker91": (audio.SPEAKER_B, audio.SPEAKER_B_CONSENT),
}


@dataclass(frozen=True)
class ConsentTrial:
    reference_speaker: str
    consent_speaker: str
    before: float  # cosine of the averaged voiceprints, as the preflight scored before
    after: float  # voice_match_score, as it scores now

    @property
    def genuine(self) -> bool:
        return self.reference_speaker == self.consent_speaker


class VoiceTimer:
    """Embeds recordings for the consent check, timing the embedding and the bandwidth
    estimate apart (the estimate is the check's added cost for every enrollment)."""

    def __init__(self, engine: EmbeddingEngine) -> None:
        self.engine = engine
        self.embedding_s = 0.0
        self.bandwidth_s = 0.0
        self.recordings = 0

    def sample(self, speech: np.ndarray) -> VoiceSample:
        started = time.perf_counter()
        _, windows = self.engine.voiceprint(speech)
        embedded = time.perf_counter()
        bandwidth = effective_bandwidth_hz(speech)
        self.embedding_s += embedded - started
        self.bandwidth_s += time.perf_counter() - embedded
        self.recordings += 1
        return VoiceSample(speech, bandwidth, windows)


def averaged_cosine(first: VoiceSample, second: VoiceSample) -> float:
    a, b = first.windows.mean(axis=0), second.windows.mean(axis=0)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def score_pairs(
    engine: EmbeddingEngine, pairs: list[tuple[str, VoiceSample, str, VoiceSample]]
) -> tuple[list[ConsentTrial], float]:
    """The trials and the mean seconds the new scoring took per pair."""
    trials, scoring_s = [], 0.0
    for reference_speaker, reference, consent_speaker, consent in pairs:
        started = time.perf_counter()
        after = voice_match_score(engine, reference, consent)
        scoring_s += time.perf_counter() - started
        trials.append(
            ConsentTrial(
                reference_speaker, consent_speaker, averaged_cosine(reference, consent), after
            )
        )
    return trials, scoring_s / max(len(pairs), 1)


def pair_scores_of(trials: list[ConsentTrial], method: str) -> PairScores:
    return PairScores(
        np.asarray([getattr(t, method) for t in trials if t.genuine]),
        np.asarray([getattr(t, method) for t in trials if not t.genuine]),
    )


def check_rates(scores: PairScores, reject_below: float, review_below: float) -> dict[str, Any]:
    rates = rates_at(scores, reject_below, review_below)
    return asdict(rates) | {
        "genuine_min": float(scores.genuine.min()),
        "impostor_max": float(scores.impostor.max()),
    }


def leave_one_speaker_out(trials: list[ConsentTrial], method: str) -> dict[str, Any]:
    """Thresholds calibrated without each speaker, rates counted on that speaker's pairs."""
    totals: dict[str, Any] = {}
    per_speaker = {}
    for held_out in sorted({t.reference_speaker for t in trials}):
        involved = [t for t in trials if held_out in (t.reference_speaker, t.consent_speaker)]
        others = [t for t in trials if t not in involved]
        thresholds = thresholds_for(pair_scores_of(others, method), 0.0)
        rates = asdict(rates_at(pair_scores_of(involved, method), *thresholds))
        per_speaker[held_out] = rates
        for key, value in rates.items():
            if key not in ("reject_below", "review_below"):
                totals[key] = totals.get(key, 0) + value
    return {"per_speaker": per_speaker, "total": totals}


def consent_check(speakers: dict[str, list[Utterance]], models: Models) -> dict[str, Any]:
    timer = VoiceTimer(models.engine)
    wide, phone, brief = {}, {}, {}
    for speaker, utterances in speakers.items():
        for u in utterances:
            speech = speech_only(u.samples, models.vad.speech_regions(u.samples))
            wide[(speaker, u.name)] = timer.sample(speech)
            phone[(speaker, u.name)] = timer.sample(band_limit(speech, TELEPHONE_EDGE_HZ))
            brief[(speaker, u.name)] = timer.sample(speech[: int(BRIEF_CONSENT_S * RATE)])
    keys = list(wide)
    ordered = [(a, b) for a in keys for b in keys if a != b]
    sets = {}
    sets["LibriSpeech"], wide_s = score_pairs(
        models.engine, [(a[0], wide[a], b[0], wide[b]) for a, b in ordered]
    )
    sets[f"LibriSpeech, {BRIEF_CONSENT_S:g} s consent"], _ = score_pairs(
        models.engine, [(a[0], wide[a], b[0], brief[b]) for a, b in ordered]
    )
    # Every pair here embeds the reference again, so only two references per speaker.
    references = {(speaker, u.name) for speaker, us in speakers.items() for u in us[:2]}
    sets["LibriSpeech, 3.4 kHz consent"], cross_s = score_pairs(
        models.engine, [(a[0], wide[a], b[0], phone[b]) for a, b in ordered if a in references]
    )
    clips = {}
    for speaker, (reference, consent) in SAMPLE_CONSENT_PAIRS.items():
        for role, ranges in (("reference", reference), ("consent", consent)):
            samples = audio.clip(ranges)
            clips[(speaker, role)] = timer.sample(
                speech_only(samples, models.vad.speech_regions(samples))
            )
    sets["pyannote sample (8 kHz band)"], _ = score_pairs(
        models.engine,
        [
            (r, clips[(r, "reference")], c, clips[(c, "consent")])
            for r in SAMPLE_CONSENT_PAIRS
            for c in SAMPLE_CONSENT_PAIRS
        ],
    )
    short = {
        (speaker, index): timer.sample(speech_only(c, models.vad.speech_regions(c)))
        for speaker, clips in SAMPLE_SHORT_CLIPS.items()
        for index, c in enumerate(audio.clip(ranges) for ranges in clips)
    }
    sets["pyannote sample, six 3 s clips"], _ = score_pairs(
        models.engine, [(a[0], short[a], b[0], short[b]) for a in short for b in short if a != b]
    )
    after_thresholds = (
        service_settings.PREFLIGHT_CONSENT_MATCH_THRESHOLD,
        service_settings.PREFLIGHT_CONSENT_MATCH_WARN,
    )
    results: dict[str, Any] = {
        "thresholds": {"before": BEFORE_THRESHOLDS, "after": after_thresholds},
        "sets": {},
    }
    for name, trials in sets.items():
        results["sets"][name] = {
            "before": check_rates(pair_scores_of(trials, "before"), *BEFORE_THRESHOLDS),
            "after": check_rates(pair_scores_of(trials, "after"), *after_thresholds),
        }
    results["leave_one_speaker_out"] = {
        method: leave_one_speaker_out(sets["LibriSpeech"], method) for method in ("before", "after")
    }
    results["sample_scores"] = [asdict(t) for t in sets["pyannote sample (8 kHz band)"]]
    wide_match = np.asarray([window_match(wide[a].windows, wide[b].windows) for a, b in ordered])
    results["narrow_band_rise"] = {}
    for edge, shipped in NARROW_BAND_RISE.get(models.engine.model_id, ()):
        limited = {
            k: models.engine.voiceprint(band_limit(v.speech, edge))[1] for k, v in wide.items()
        }
        rise = np.asarray([window_match(limited[a], limited[b]) for a, b in ordered]) - wide_match
        results["narrow_band_rise"][str(edge)] = {
            "measured": float(rise.mean()),
            "shipped": shipped,
        }
    results["cost_ms"] = {
        "embedding_per_recording": 1000 * timer.embedding_s / timer.recordings,
        "bandwidth_estimate_per_recording": 1000 * timer.bandwidth_s / timer.recordings,
        "score_same_band": 1000 * wide_s,
        "score_band_mismatch": 1000 * cross_s,
    }
    return results


def count(part: int, whole: int) -> str:
    return f"{part:>4}/{whole:<4} {pct(part / whole) if whole else '   - '}"


def report_consent(result: dict[str, Any]) -> None:
    before, after = result["thresholds"]["before"], result["thresholds"]["after"]
    print(
        "4. Consent voice check: before = cosine of averaged voiceprints, refuse < "
        f"{before[0]:.2f}, review < {before[1]:.2f}; after = window match within the common "
        f"band, refuse < {after[0]:.2f}, review < {after[1]:.2f}"
    )
    print(
        f"   {'set':<30} {'':<6} {'false accept':>14} {'false reject':>14} "
        f"{'genuine review':>14} {'genuine refused':>15} {'impostor review':>15} "
        f"{'gen min':>8} {'imp max':>8}"
    )
    for name, methods in result["sets"].items():
        for method, r in methods.items():
            print(
                f"   {name:<30} {method:<6} {count(r['false_accepts'], r['impostor'])} "
                f"{count(r['false_rejects'], r['genuine'])} "
                f"{count(r['genuine_reviewed'], r['genuine'])} "
                f" {count(r['genuine_refused'], r['genuine'])} "
                f" {count(r['impostor_reviewed'], r['impostor'])} "
                f"{r['genuine_min']:8.3f} {r['impostor_max']:8.3f}"
            )
    print(
        "   LibriSpeech, leave one speaker out (thresholds for 0 false accepts on the others; "
        "an impostor pair counts in the folds of both its speakers):"
    )
    for method, loso in result["leave_one_speaker_out"].items():
        t = loso["total"]
        print(
            f"   {method:<6} false accept {count(t['false_accepts'], t['impostor'])}  "
            f"false reject {count(t['false_rejects'], t['genuine'])}  "
            f"genuine refused {count(t['genuine_refused'], t['genuine'])}  thresholds "
            + ", ".join(
                f"{s} {r['reject_below']:.3f}/{r['review_below']:.3f}"
                for s, r in loso["per_speaker"].items()
            )
        )
    print(
        "   sample scores (reference -> consent: before, after): "
        + "; ".join(
            f"{t['reference_speaker']}->{t['consent_speaker']} {t['before']:.3f}, {t['after']:.3f}"
            for t in result["sample_scores"]
        )
    )
    cost = result["cost_ms"]
    print(
        "   narrow-band rise of the window match on LibriSpeech (band edge: measured/shipped): "
        + ", ".join(
            f"{float(edge):.0f} Hz {r['measured']:.3f}/{r['shipped']:.3f}"
            for edge, r in result["narrow_band_rise"].items()
        )
    )
    print(
        f"   cost per recording: embedding {cost['embedding_per_recording']:.0f} ms, bandwidth "
        f"estimate {cost['bandwidth_estimate_per_recording']:.1f} ms; per check: score "
        f"{cost['score_same_band']:.2f} ms, {cost['score_band_mismatch']:.0f} ms when the "
        "bands differ (the wider recording is embedded again)"
    )


def pct(value: float) -> str:
    return f"{100 * value:5.1f}%"


def rate_cells(scores: Scores) -> str:
    return "".join(f"{pct(scores[str(c)]['rate']):>9}" for c in COLLARS)


def table_header(first: str) -> str:
    cells = "".join(f"{f'{name}@{c}':>9}" for name in ("DER", "IER") for c in COLLARS)
    return f"   {first:<30} {'est':>5}{cells}  "


def table_row(label: str, speakers: str, der: Scores, ier: Scores, note: str) -> str:
    return f"   {label:<30} {speakers:>5}{rate_cells(der)}{rate_cells(ier)}  {note}"


def breakdown(metric: str, scores: Scores) -> list[str]:
    return [
        f"   {metric} collar {c}: {pct(s['rate'])} = miss {pct(s['missed'])}"
        f" + false alarm {pct(s['false_alarm'])} + confusion {pct(s['confusion'])}"
        for c, s in scores.items()
    ]


def report_identification(result: dict[str, Any]) -> None:
    print("1. Identification on LibriSpeech (one enrollment utterance per speaker)")
    print(
        f"   {'speaker':<8} {'enrolled from':<16} {'speech':>7}  {'correct':>7}  "
        f"{'genuine mean':>12}  {'impostor max':>12}"
    )
    for speaker, row in result["per_speaker"].items():
        print(
            f"   {speaker:<8} {row['enrollment_utterance']:<16} {row['enrollment_speech_s']:6.1f}s"
            f"  {row['correct']:>3}/{row['trials']:<3}  {row['genuine_mean']:12.3f}"
            f"  {row['impostor_max']:12.3f}"
        )
    print(f"   closed-set accuracy  {pct(result['accuracy'])} of {result['trials']} utterances")
    print(
        f"   EER                  {pct(result['eer'])} at threshold {result['eer_threshold']:.3f}"
        f" ({result['genuine_trials']} genuine, {result['impostor_trials']} impostor trials)"
    )
    print(
        f"   at default {result['default_threshold']:.2f}      "
        f"false accept {pct(result['far_at_default'])}, "
        f"false reject {pct(result['frr_at_default'])}"
    )


def report_diarization(result: dict[str, Any]) -> None:
    print("2. Diarization of synthetic LibriSpeech conversations")
    print(table_header("conversation: speakers") + "identified as")
    for r in result["conversations"]:
        print(
            table_row(
                f"{r['name']}: {','.join(r['speaker_ids'])}",
                f"{r['estimated_speakers']}/{r['speakers']}",
                r["der"],
                r["ier"],
                ",".join(r["identified_labels"]) or "nobody",
            )
        )
    for condition, summary in result["conditions"].items():
        print(
            table_row(
                f"mean of {summary['conversations']}, {condition}",
                "",
                summary["der"],
                summary["ier"],
                f"speaker count right in {pct(summary['speaker_count_right']).strip()}",
            )
        )
    overall = result["conditions"]["all"]
    print("\n".join(breakdown("mean DER", overall["der"]) + breakdown("mean IER", overall["ier"])))


def verdict(value: float, limit: float) -> str:
    return "met" if value <= limit else "NOT met"


def short_turn_cells(mode: dict[str, Any]) -> str:
    share = mode["stranger_attributed_s"] / max(mode["stranger_speech_s"], 1e-9)
    return f"{rate_cells(mode['der'])}{rate_cells(mode['ier'])}{pct(share):>9}"


def report_short_turns(result: dict[str, Any]) -> None:
    rates = "".join(f"{f'{name}@{c}':>9}" for name in ("DER", "IER") for c in COLLARS)
    for number, (condition, title) in enumerate(
        (
            ("clean", "LibriSpeech"),
            (
                "noisy",
                f"with reverberation (RT60 {RT60_S[0]:g}-{RT60_S[1]:g} s) and noise "
                f"({SNR_DB[0]:g}-{SNR_DB[1]:g} dB SNR)",
            ),
        )
    ):
        figures = result[condition]
        print(
            f"2{'bc'[number]}. Short turns and a never-enrolled speaker (*), {title}: batch, "
            f"and streaming in {STREAM_PIECE_S:g} s pieces; 'stranger' = share of the "
            "never-enrolled speaker's speech labelled as an enrolled person"
        )
        print(f"   {'':<34} {'batch':<45}{'streaming'}")
        print(f"   {'conversation: speakers':<34}{rates}{'stranger':>9}{rates}{'stranger':>9}")
        for r in figures["conversations"]:
            speakers = ",".join(s + "*" * (s == r["stranger"]) for s in r["speaker_ids"])
            print(
                f"   {r['name'] + ': ' + speakers:<34}"
                f"{short_turn_cells(r['batch'])}{short_turn_cells(r['stream'])}"
            )
        summary = figures["summary"]
        batch, stream = summary["batch"], summary["stream"]
        mean_label = f"mean of {len(figures['conversations'])}"
        print(f"   {mean_label:<34}{short_turn_cells(batch)}{short_turn_cells(stream)}")
        for mode, scores in (("batch", batch), ("streaming", stream)):
            print("\n".join(breakdown(f"{mode} IER", scores["ier"])))
            reasons = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(scores["reasons_s"].items()))
            print(
                f"   {mode}: never-enrolled speech {scores['stranger_speech_s']:.1f} s, "
                f"{scores['stranger_attributed_s']:.1f} s of it under an enrolled id; "
                f"stated reasons: {reasons or 'none'}; "
                f"compute {scores['compute_rtf']:.3f} x real time"
            )
        batch_ier, stream_ier = batch["ier"]["0.5"]["rate"], stream["ier"]["0.5"]["rate"]
        gap = stream_ier - batch_ier
        worst_share = max(batch["stranger_share"], stream["stranger_share"])
        print(
            f"   issue 17 targets: batch IER@0.5 {pct(batch_ier).strip()} (<= "
            f"{pct(TARGET_BATCH_IER).strip()}: {verdict(batch_ier, TARGET_BATCH_IER)}); streaming "
            f"IER@0.5 {pct(stream_ier).strip()}, {100 * gap:+.1f} points from batch (<= "
            f"{100 * TARGET_STREAM_GAP:g}: {verdict(gap, TARGET_STREAM_GAP)}); never-enrolled "
            f"speech under an enrolled id: batch {pct(batch['stranger_share']).strip()}, "
            f"streaming {pct(stream['stranger_share']).strip()} (<= "
            f"{pct(TARGET_STRANGER_SHARE).strip()}: "
            f"{verdict(worst_share, TARGET_STRANGER_SHARE)})"
        )
        if number == 0:
            print()


def report_sample(result: dict[str, Any]) -> None:
    print("3. pyannote.audio sample (2 speakers, 30 s)")
    print(table_header("") + "identified as")
    speakers = f"{result['estimated_speakers']}/{result['speakers']}"
    labels = ",".join(result["identified_labels"]) or "nobody"
    print(table_row("sample.wav", speakers, result["der"], result["ier"], labels))
    stream = result["stream"]
    speakers = f"{stream['estimated_speakers']}/{stream['speakers']}"
    labels = ",".join(stream["identified_labels"]) or "nobody"
    label = f"streaming, {STREAM_PIECE_S:g} s pieces"
    print(table_row(label, speakers, stream["der"], stream["ier"], labels))
    print("\n".join(breakdown("DER", result["der"]) + breakdown("IER", result["ier"])))
    print("\n".join(breakdown("streaming IER", stream["ier"])))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=LIBRISPEECH, help="LibriSpeech speakers")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic conversations")
    parser.add_argument("--conversations", type=int, default=10, help="of the diarization section")
    parser.add_argument(
        "--short-turn-conversations",
        type=int,
        default=6,
        help="of the short-turns section, each scored clean and noisy",
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per conversation")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated, of {','.join(SECTIONS)} [all]",
    )
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    if unknown := sections - set(SECTIONS):
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")

    wall: dict[str, float] = {}
    figures: dict[str, Any] = {}
    started = time.perf_counter()
    models = Models()
    wall["load models"] = time.perf_counter() - started

    started = time.perf_counter()
    speakers = load_speakers(args.data, models)
    wall["load speakers"] = time.perf_counter() - started
    for section in SECTIONS:
        if section not in sections:
            continue
        started = time.perf_counter()
        if section == "identification":
            figures[section] = identification(speakers, models.options.threshold)
            report_identification(figures[section])
        elif section == "diarization":
            figures[section] = diarization(
                speakers, models, args.conversations, args.duration, args.seed
            )
            report_diarization(figures[section])
        elif section == "short-turns":
            figures[section] = short_turns(
                speakers, models, args.short_turn_conversations, args.duration, args.seed
            )
            report_short_turns(figures[section])
        elif section == "sample":
            figures[section] = pyannote_sample(models)
            report_sample(figures[section])
        else:
            figures[section] = consent_check(speakers, models)
            report_consent(figures[section])
        wall[section] = time.perf_counter() - started
        print()

    print("wall time: " + ", ".join(f"{part} {s:.1f} s" for part, s in wall.items()))
    if args.json:
        config = {
            "data": str(args.data),
            "seed": args.seed,
            "conversations": args.conversations,
            "short_turn_conversations": args.short_turn_conversations,
            "stream_settings": asdict(models.stream_settings),
            "duration_s": args.duration,
            "options": asdict(models.options),
            "model": f"{models.engine.model_id} {models.engine.model_version}",
        }
        figures = {"config": config} | figures | {"wall_s": wall}
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
