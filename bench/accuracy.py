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
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
from diarization.engine import DiarizationOptions, diarize
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
from voice.vad import SileroVad, speech_only

DIARIZATION_PAD_MS = 100  # the VAD padding the service's diarization uses
COLLARS = (0.0, 0.5)
PIECE_S = (3.0, 8.0)
GAP_S = 0.3
SAMPLE_ENROLLMENT = {"speaker90": (10.6, 14.45), "speaker91": (21.9, 26.9)}
SECTIONS = ("identification", "diarization", "sample", "consent")

Scores = dict[str, dict[str, float]]  # collar -> rate and its components


@dataclass(frozen=True)
class Utterance:
    speaker: str
    name: str
    samples: np.ndarray
    speech_s: float
    voiceprint: np.ndarray


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

    def voiceprint(self, samples: np.ndarray) -> tuple[np.ndarray, float]:
        """The enrollment voiceprint of a recording's speech (default VAD), and that speech's s."""
        speech = speech_only(samples, self.vad.speech_regions(samples))
        vector, _ = self.engine.voiceprint(speech)
        return vector, speech.size / RATE

    def hypothesis(
        self, samples: np.ndarray, gallery: EnrolledGallery | None, uri: str
    ) -> Annotation:
        regions = self.vad.speech_regions(samples, pad_ms=DIARIZATION_PAD_MS)
        spans = [(r.start, r.end) for r in regions]
        result = diarize(samples, spans, self.engine, gallery, self.options)
        return result.annotation(self.options.min_label_s, uri=uri)


def load_speakers(data: Path, models: Models) -> dict[str, list[Utterance]]:
    speakers = {}
    for folder in sorted(d for d in data.iterdir() if d.is_dir()):
        utterances = []
        for path in sorted(folder.rglob("*.flac"), key=lambda p: p.name):
            samples = decode(path)
            vector, speech_s = models.voiceprint(samples)
            utterances.append(Utterance(folder.name, path.stem, samples, speech_s, vector))
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


def build_conversation(
    name: str,
    speakers: list[str],
    pools: dict[str, list[Utterance]],
    rng: np.random.Generator,
    duration_s: float,
    models: Models,
) -> Conversation:
    """Turns alternate between speakers (each speaks once before any repeats)."""
    reference = Annotation(uri=name)
    gap = np.zeros(int(GAP_S * RATE), dtype=np.float32)
    chunks: list[np.ndarray] = []
    cursor, previous = 0, ""
    first_round = [str(s) for s in rng.permutation(speakers)]
    while cursor < duration_s * RATE:
        if first_round:
            speaker = first_round.pop(0)
        else:
            speaker = str(rng.choice([s for s in speakers if s != previous]))
        pool = pools[speaker]
        samples = pool[int(rng.integers(len(pool)))].samples
        length = min(int(rng.uniform(*PIECE_S) * RATE), samples.size)
        offset = int(rng.integers(samples.size - length + 1))
        piece = samples[offset : offset + length]
        for region in models.vad.speech_regions(piece, pad_ms=DIARIZATION_PAD_MS):
            segment = Segment((cursor + region.start) / RATE, (cursor + region.end) / RATE)
            reference[segment] = speaker
        chunks.extend([piece, gap])
        cursor += piece.size + gap.size
        previous = speaker
    return Conversation(name, speakers, np.concatenate(chunks[:-1]), reference)


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
) -> dict[str, Any]:
    """DER with no one enrolled, IER with ``gallery``, and the estimated speaker count."""
    uri, duration_s = reference.uri, samples.size / RATE
    anonymous = models.hypothesis(samples, None, uri)
    identified = models.hypothesis(samples, gallery, uri)
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
            f"conv{index:02d}", chosen, pools, rng, duration_s, models
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


def pyannote_sample(models: Models) -> dict[str, Any]:
    samples = audio.sample()
    reference = load_rttm(str(audio.sample_rttm_path()))["sample"]
    ids = list(SAMPLE_ENROLLMENT)
    vectors = np.stack([models.voiceprint(audio.clip([SAMPLE_ENROLLMENT[s]]))[0] for s in ids])
    return evaluate(models, samples, reference, EnrolledGallery(ids, vectors))


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


def report_sample(result: dict[str, Any]) -> None:
    print("3. pyannote.audio sample (2 speakers, 30 s)")
    print(table_header("") + "identified as")
    speakers = f"{result['estimated_speakers']}/{result['speakers']}"
    labels = ",".join(result["identified_labels"]) or "nobody"
    print(table_row("sample.wav", speakers, result["der"], result["ier"], labels))
    print("\n".join(breakdown("DER", result["der"]) + breakdown("IER", result["ier"])))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=LIBRISPEECH, help="LibriSpeech speakers")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic conversations")
    parser.add_argument("--conversations", type=int, default=10)
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
            "duration_s": args.duration,
            "options": asdict(models.options),
            "model": f"{models.engine.model_id} {models.engine.model_version}",
        }
        figures = {"config": config} | figures | {"wall_s": wall}
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
