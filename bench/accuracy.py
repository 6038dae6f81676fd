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

DER and IER are pyannote.metrics', at collar 0 and 0.5 s (±250 ms around reference
boundaries), overlapped speech scored.

    .venv/bin/python bench/accuracy.py
    .venv/bin/python bench/accuracy.py --data ../shared/data/librispeech-dev --json out.json
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyannote.core import Annotation, Segment, Timeline  # noqa: E402
from pyannote.database.util import load_rttm  # noqa: E402
from pyannote.metrics.diarization import DiarizationErrorRate  # noqa: E402
from pyannote.metrics.identification import IdentificationErrorRate  # noqa: E402

from bench.common import LIBRISPEECH, RATE, decode  # noqa: E402
from diarization.engine import DiarizationOptions, diarize
from tests import audio  # noqa: E402
from voice.engines import EmbeddingEngine, load_engine
from voice.gallery import EnrolledGallery
from voice.vad import SileroVad, speech_only

DIARIZATION_PAD_MS = 100  # the VAD padding the service's diarization uses
COLLARS = (0.0, 0.5)
PIECE_S = (3.0, 8.0)
GAP_S = 0.3
SAMPLE_ENROLLMENT = {"speaker90": (10.6, 14.45), "speaker91": (21.9, 26.9)}

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
    args = parser.parse_args()

    wall: dict[str, float] = {}
    started = time.perf_counter()
    models = Models()
    wall["load models"] = time.perf_counter() - started

    started = time.perf_counter()
    speakers = load_speakers(args.data, models)
    identified = identification(speakers, models.options.threshold)
    wall["1. identification"] = time.perf_counter() - started
    report_identification(identified)
    print()

    started = time.perf_counter()
    diarized = diarization(speakers, models, args.conversations, args.duration, args.seed)
    wall["2. diarization"] = time.perf_counter() - started
    report_diarization(diarized)
    print()

    started = time.perf_counter()
    sample = pyannote_sample(models)
    wall["3. sample"] = time.perf_counter() - started
    report_sample(sample)
    print()

    print("wall time: " + ", ".join(f"{part} {s:.1f} s" for part, s in wall.items()))
    if args.json:
        figures = {
            "config": {
                "data": str(args.data),
                "seed": args.seed,
                "conversations": args.conversations,
                "duration_s": args.duration,
                "options": asdict(models.options),
                "model": f"{models.engine.model_id} {models.engine.model_version}",
            },
            "identification": identified,
            "diarization": diarized,
            "sample": sample,
            "wall_s": wall,
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
