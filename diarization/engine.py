"""Who spoke when: voice activity, window embeddings, clustering, and identification.

The pipeline is built from pyannote.audio's pieces: speech regions come from Silero VAD (or
a pyannote segmentation checkpoint, see ``diarization.segmentation``), speaker embeddings
from the node's engine over 1.5 s windows every 0.25 s, the result is a
``pyannote.core.Annotation``. Windows 0.75 s apart are clustered (spectral clustering of
their cosine affinities); every frame then goes to one voice by the shared scoring path
(``diarization.scoring``: all windows' scores against the voices' centroids and against a
voice not heard yet, Viterbi with a penalty per change of voice), so a turn of half a second
can be resolved and a stranger's few words become a voice of their own. Each cluster's centroid
is compared with the tenant's enrolled voiceprints: a voice that matches an enrolled speaker
above the threshold is that speaker's candidate; the others get ``spk_N`` in order of first
appearance. A turn carries the enrolled id only when its own audio confirms it
(``scoring.attribute``), and each segment says why it carries its label (``reason``).
Turns whose stretch of one voice (short pauses bridged) is under ``min_label_s`` are never
given an enrolled speaker's id.

Overlapped speech (from the segmentation model) is never matched against the gallery: two
voices speak at once, so its embedding is neither's. It gets two turns, one per voice: the
voice its frames chose, and the other voice speaking next to it (or, inside one voice's
stretch, the voice its frames score second best for). Each carries the label of the clean
turn of that voice it continues (``continues_turn``). One with no such turn next to it takes
the label of the clean turn of its voice that the segmentation model hears as the same local
speaker within one of its 10 s chunks (``same_voice_as_turn``: the frames and the model
agree), and is otherwise left unlabelled (``overlap``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from pyannote.core import Annotation, Segment
from scipy.cluster.vq import kmeans2
from scipy.linalg import eigh
from scipy.optimize import linear_sum_assignment

from diarization.scoring import (
    CONTINUED_WITHIN_S,
    FRAME_S,
    MIN_EMBED_S,
    SAMPLE_RATE,
    WINDOW_S,
    Attribution,
    Reason,
    ScoringRules,
    attribute,
    frame_count,
    frame_scores,
    normalised_mean,
    smooth_path,
    to_frame,
    window_spans,
)
from diarization.segmentation import ChunkSpeakers
from voice.engines import EmbeddingEngine
from voice.gallery import EnrolledGallery

# Clustering sees the windows 0.75 s apart: neighbours 0.25 s apart share most of their audio
# and would only slow the spectral step down.
CLUSTER_HOP_S = 0.75
# Frame assignment, then centroids from the windows of one voice only, this many times.
RESEGMENT_PASSES = 2
# Speech that fits no cluster is a voice of its own only when there is at least this much.
NEWCOMER_MIN_S = 1.0
# Above this many windows, clustering runs on an even subset; the rest join the nearest centroid.
MAX_CLUSTERED_WINDOWS = 4000
# Clusters holding less speech than this are noise of the clustering: merged into the nearest.
MIN_CLUSTER_S = 2.0
# A cluster is split in two only when each half holds at least this much speech.
MIN_SPLIT_S = 4.0
MAX_SPEAKERS = 20
# A pause shorter than this does not end a voice's stretch when judging "too short to label".
RUN_GAP_S = 0.5
# Enrolled candidates kept per cluster for exclusive matching against very large galleries.
TOP_CANDIDATES = 5
# A local speaker of a segmentation chunk speaks in a turn when it speaks alone in at least
# this share of the turn's frames that the chunk holds.
SAME_VOICE_SHARE = 0.5
# Overlap shorter than this is not linked to a turn that is not next to it: a few frames of
# two voices are more often the model's slip than someone's word.
SAME_VOICE_MIN_S = 0.2


@dataclass(frozen=True)
class DiarizationOptions:
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    identify: bool = True
    threshold: float = 0.75
    exclusive: bool = False
    confidence: bool = False
    affinity_pruning: float = 0.3
    merge_threshold: float = 0.93
    split_threshold: float = 0.8
    shared_match_margin: float = 0.05
    min_label_s: float = 0.5
    turn_threshold: float = ScoringRules.turn_threshold
    enrolled_margin: float = ScoringRules.enrolled_margin
    unenrolled_margin: float = ScoringRules.unenrolled_margin
    change_penalty: float = ScoringRules.change_penalty
    new_voice_score: float = ScoringRules.new_voice_score

    @property
    def rules(self) -> ScoringRules:
        return ScoringRules(
            turn_threshold=self.turn_threshold,
            enrolled_margin=self.enrolled_margin,
            unenrolled_margin=self.unenrolled_margin,
            change_penalty=self.change_penalty,
            new_voice_score=self.new_voice_score,
        )


@dataclass(frozen=True)
class Identification:
    speaker_id: str
    score: float
    second_best_score: float | None


@dataclass
class Turn:
    start: float
    end: float
    cluster: int
    confidence: float
    overlapped: bool = False
    # Length of the stretch of this voice the turn belongs to (pauses under RUN_GAP_S bridged).
    run_s: float = 0.0
    # Index of that stretch in the recording (-1: not measured).
    run: int = -1
    # Whether its own evidence makes it its voice's enrolled speaker (set by ``identify``).
    attribution: Attribution | None = None
    # An overlapped turn: the index (in ``Diarization.turns``) of the clean turn of its
    # voice that it continues, whose label it carries.
    continues: int | None = None
    # Whether that turn is not next to it but one the segmentation model hears as the same
    # voice within one of its chunks.
    same_voice: bool = False


@dataclass
class Diarization:
    duration_s: float
    turns: list[Turn]
    centroids: np.ndarray
    frame_confidence: np.ndarray | None
    # Each stretch's own embedding (by ``Turn.run``); a turn without one is judged by its
    # voice's centroid.
    evidence: dict[int, np.ndarray] = field(default_factory=dict)
    # A turn long enough to hold windows of its own is judged by them (by index in ``turns``).
    turn_evidence: dict[int, np.ndarray] = field(default_factory=dict)
    identified: dict[int, Identification] = field(default_factory=dict)
    cluster_labels: dict[int, str] = field(default_factory=dict)
    warnings: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._number_clusters()

    def identify(self, gallery: EnrolledGallery | None, options: DiarizationOptions) -> None:
        """(Re)labels the clusters that match an enrolled speaker (the rest get ``spk_N``),
        then judges every turn of those on its own evidence."""
        self.identified = {}
        if options.identify and gallery is not None:
            self.identified = identify_clusters(self.centroids, gallery, options)
        self._number_clusters()
        # The voices nobody enrolled that speak in the recording (a cluster the frames left
        # with no turn is no one's voice).
        unenrolled = sorted(self.cluster_labels)
        voices = self.centroids[unenrolled]
        for index, turn in enumerate(self.turns):
            if turn.overlapped:
                continue  # never matched: its audio is two voices at once
            who = self.identified.get(turn.cluster)
            own = self.turn_evidence.get(index)
            decided = attribute(
                own
                if own is not None
                else self.evidence.get(turn.run, self.centroids[turn.cluster]),
                gallery,
                who.speaker_id if who else None,
                self.centroids[turn.cluster],
                voices,
                options.rules,
            )
            if decided.closer_voice is not None:
                decided = replace(decided, closer_voice=unenrolled[decided.closer_voice])
            turn.attribution = decided

    def _number_clusters(self) -> None:
        self.cluster_labels = {}
        for turn in self.turns:
            if turn.cluster not in self.identified and turn.cluster not in self.cluster_labels:
                self.cluster_labels[turn.cluster] = f"spk_{len(self.cluster_labels)}"

    def labelled_speaker_ids(self, min_label_s: float) -> list[str]:
        """Enrolled speakers that label at least one turn (a match on too little speech is
        not a use of the voiceprint, and is not reported)."""
        labels = {self.label_of(turn, min_label_s) for turn in self.turns}
        return sorted({w.speaker_id for w in self.identified.values()} & labels)

    def label_of(self, turn: Turn, min_label_s: float) -> str | None:
        return self.decision(turn, min_label_s)[0]

    def decision(self, turn: Turn, min_label_s: float) -> tuple[str | None, Reason]:
        """The turn's label and why it carries it."""
        if turn.cluster not in self.identified:
            return self.cluster_labels.get(turn.cluster), Reason.UNENROLLED_VOICE
        if turn.overlapped:
            if turn.continues is None:
                return None, Reason.OVERLAP
            label, reason = self.decision(self.turns[turn.continues], min_label_s)
            if label is None:
                return None, reason
            return label, Reason.SAME_VOICE_AS_TURN if turn.same_voice else Reason.CONTINUES_TURN
        if turn.run_s < min_label_s:
            return None, Reason.TOO_SHORT
        decided = turn.attribution
        if decided is None:  # identified by hand, never judged: no evidence, no enrolled id
            return None, Reason.WEAK_MATCH
        if decided.closer_voice is not None:
            # As close to a voice nobody enrolled as to its own: that voice's spk_N.
            return self.cluster_labels.get(decided.closer_voice), decided.reason
        return decided.speaker_id, decided.reason

    def annotation(self, min_label_s: float, uri: str = "audio") -> Annotation:
        annotation = Annotation(uri=uri)
        for index, turn in enumerate(self.turns):
            label = self.label_of(turn, min_label_s)
            if label is not None:
                annotation[Segment(turn.start, turn.end), index] = label
        return annotation


def cluster_windows(
    embeddings: np.ndarray, weights: np.ndarray, options: DiarizationOptions
) -> np.ndarray:
    """Cluster index per window (0-based), honouring the speaker-count hints.

    Spectral clustering of the windows' cosine affinities (row-wise pruned, as for d-vectors
    in Wang et al., "Speaker diarization with LSTM"), the speaker count from the largest
    eigengap; then clusters whose centroids are still alike are merged.
    """
    n = len(embeddings)
    if n <= 1 or (n == 2 and not options.num_speakers):
        return np.zeros(n, dtype=int)
    subset = np.arange(n)
    if n > MAX_CLUSTERED_WINDOWS:
        subset = np.linspace(0, n - 1, MAX_CLUSTERED_WINDOWS).astype(int)
    wanted_max = min(options.num_speakers or options.max_speakers or MAX_SPEAKERS, len(subset) - 1)
    wanted_min = min(options.num_speakers or options.min_speakers or 1, wanted_max)
    labels = _spectral(embeddings[subset], wanted_min, wanted_max, options.affinity_pruning)
    assignment = np.full(n, -1)
    assignment[subset] = labels
    if len(subset) < n:
        assignment = _nearest_centroid(embeddings, assignment)
    assignment = _merge_clusters(
        embeddings, weights, assignment, options.merge_threshold, wanted_min, wanted_max
    )
    if not options.num_speakers:
        assignment = _split_clusters(embeddings, assignment, options, wanted_max)
    return _refine(embeddings, weights, assignment, keep_small=wanted_min > 1)


def _spectral(embeddings: np.ndarray, min_k: int, max_k: int, pruning: float) -> np.ndarray:
    n = len(embeddings)
    affinity = np.clip(embeddings @ embeddings.T, 0.0, None).astype(np.float64)
    keep = min(n - 1, max(2, int(np.ceil(pruning * n))))
    strongest = np.argpartition(-affinity, keep, axis=1)[:, :keep]
    mask = np.zeros_like(affinity, dtype=bool)
    np.put_along_axis(mask, strongest, True, axis=1)
    affinity = np.where(mask, affinity, 0.0)
    affinity = 0.5 * (affinity + affinity.T)
    degree = 1.0 / np.sqrt(np.maximum(affinity.sum(axis=1), 1e-9))
    laplacian = np.eye(n) - degree[:, None] * affinity * degree[None, :]
    values, vectors = eigh(laplacian, subset_by_index=[0, min(n - 1, max_k)])
    gaps = np.diff(values)
    k = int(np.argmax(gaps[min_k - 1 : max_k])) + min_k if len(gaps) >= max_k else min_k
    if k <= 1:
        return np.zeros(n, dtype=int)
    spectrum = vectors[:, :k]
    spectrum /= np.maximum(np.linalg.norm(spectrum, axis=1, keepdims=True), 1e-12)
    _, labels = kmeans2(spectrum, k, minit="++", seed=0)
    return np.asarray(labels, dtype=int)


def _nearest_centroid(embeddings: np.ndarray, assignment: np.ndarray) -> np.ndarray:
    clusters = sorted(set(assignment[assignment >= 0].tolist()))
    centroids = _centroids(embeddings, assignment, clusters)
    return np.asarray(clusters)[np.argmax(embeddings @ centroids.T, axis=1)]


def _merge_clusters(
    embeddings: np.ndarray,
    weights: np.ndarray,
    assignment: np.ndarray,
    merge_threshold: float,
    wanted_min: int | None,
    wanted_max: int | None,
) -> np.ndarray:
    """Merges the two clusters with the most similar centroids while they are similar enough
    (or while there are more than ``wanted_max``), never below ``wanted_min``.

    Window clustering over-segments (short windows are noisy); centroids of many windows are
    far more reliable, so the speaker count is decided on them.
    """
    assignment = assignment.copy()
    while True:
        clusters = sorted(set(assignment.tolist()))
        if len(clusters) <= max(1, wanted_min or 1):
            return assignment
        centroids = _centroids(embeddings, assignment, clusters)
        similarity = centroids @ centroids.T
        np.fill_diagonal(similarity, -np.inf)
        a, b = np.unravel_index(np.argmax(similarity), similarity.shape)
        too_many = wanted_max is not None and len(clusters) > wanted_max
        if similarity[a, b] < merge_threshold and not too_many:
            return assignment
        keep, drop = clusters[a], clusters[b]
        if weights[assignment == drop].sum() > weights[assignment == keep].sum():
            keep, drop = drop, keep
        assignment[assignment == drop] = keep


def _split_clusters(
    embeddings: np.ndarray, assignment: np.ndarray, options: DiarizationOptions, wanted_max: int
) -> np.ndarray:
    """Splits a cluster in two while its two halves sound like different people (centroids
    under ``split_threshold``, each half with ``MIN_SPLIT_S`` of speech).

    The eigengap undercounts when two speakers' voices are alike: a never-enrolled voice then
    shares a cluster with an enrolled one, and every turn of it starts as that person's.
    """
    assignment = assignment.copy()
    smallest = int(np.ceil(MIN_SPLIT_S / CLUSTER_HOP_S))
    unsplittable: set[int] = set()
    while len(set(assignment.tolist())) < wanted_max:
        candidates = [
            c
            for c in sorted(set(assignment.tolist()))
            if c not in unsplittable and (assignment == c).sum() >= 2 * smallest
        ]
        if not candidates:
            return assignment
        cluster = candidates[0]
        rows = np.flatnonzero(assignment == cluster)
        halves = _spectral(embeddings[rows], 2, 2, options.affinity_pruning)
        if np.bincount(halves, minlength=2).min() < smallest or (
            _halves_alike(embeddings[rows], halves, options.split_threshold)
        ):
            unsplittable.add(cluster)
            continue
        assignment[rows[halves == 1]] = assignment.max() + 1
    return assignment


def _halves_alike(embeddings: np.ndarray, halves: np.ndarray, threshold: float) -> bool:
    first, second = (normalised_mean(embeddings[halves == half]) for half in (0, 1))
    return float(first @ second) >= threshold


def _centroids(embeddings: np.ndarray, assignment: np.ndarray, clusters: list[int]) -> np.ndarray:
    means = np.stack([embeddings[assignment == c].mean(axis=0) for c in clusters])
    return means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)


def _refine(
    embeddings: np.ndarray, weights: np.ndarray, assignment: np.ndarray, *, keep_small: bool
) -> np.ndarray:
    """Drops clusters with too little speech, then moves every window to its nearest centroid."""
    for _ in range(2):
        clusters = sorted(set(assignment[assignment >= 0].tolist()))
        if not keep_small and len(clusters) > 1:
            speech = {c: float(weights[assignment == c].sum()) for c in clusters}
            large = [c for c in clusters if speech[c] >= MIN_CLUSTER_S]
            clusters = large or [max(clusters, key=lambda c: speech[c])]
        centroids = _centroids(embeddings, assignment, clusters)
        nearest = np.argmax(embeddings @ centroids.T, axis=1)
        assignment = np.asarray(clusters)[nearest]
    # Renumber 0..k-1 in order of first appearance.
    order: dict[int, int] = {}
    for c in assignment.tolist():
        order.setdefault(c, len(order))
    return np.asarray([order[c] for c in assignment.tolist()], dtype=int)


def identify_clusters(
    centroids: np.ndarray, gallery: EnrolledGallery, options: DiarizationOptions
) -> dict[int, Identification]:
    """Which enrolled speaker each cluster is, when one scores above the threshold."""
    if not len(gallery) or not len(centroids):
        return {}
    scores = gallery.scores(centroids)
    ranked = gallery.top_two(centroids)
    if not options.exclusive:
        matches = {
            cluster: Identification(gallery.speaker_ids[best], score, _finite(second))
            for cluster, (best, score, second) in enumerate(ranked)
            if score >= options.threshold
        }
        # Several voices may carry one enrolled speaker's id (the clustering split that
        # speaker), but only when they match about as well as the best of them: a voice far
        # below the best is a similar-sounding other person.
        best_score: dict[str, float] = {}
        for who in matches.values():
            best_score[who.speaker_id] = max(best_score.get(who.speaker_id, -1.0), who.score)
        return {
            cluster: who
            for cluster, who in matches.items()
            if who.score >= best_score[who.speaker_id] - options.shared_match_margin
        }
    # Exclusive: each enrolled speaker at most once, the assignment with the highest total score.
    columns = sorted({int(i) for row in scores for i in np.argsort(row)[-TOP_CANDIDATES:]})
    sub = scores[:, columns]
    eligible = np.where(sub >= options.threshold, sub, -1e3)
    rows, cols = linear_sum_assignment(-eligible)
    out = {}
    for cluster, col in zip(rows.tolist(), cols.tolist(), strict=True):
        if eligible[cluster, col] < options.threshold:
            continue
        _, _, second = ranked[cluster]
        out[cluster] = Identification(
            gallery.speaker_ids[columns[col]], float(sub[cluster, col]), _finite(second)
        )
    return out


def _finite(value: float) -> float | None:
    return None if np.isnan(value) else round(value, 4)


def diarize(
    samples: np.ndarray,
    regions: list[tuple[int, int]],
    engine: EmbeddingEngine,
    gallery: EnrolledGallery | None,
    options: DiarizationOptions,
    overlap: list[tuple[int, int]] | None = None,
    chunks: list[ChunkSpeakers] | None = None,
) -> Diarization:
    """Diarizes 16 kHz mono ``samples`` whose speech lies in ``regions`` (sample ranges) and
    two voices at once in ``overlap``, with the local speakers of the segmentation model's
    ``chunks`` (both from a segmentation model, when there is one)."""
    duration_s = len(samples) / SAMPLE_RATE
    frames = frame_count(len(samples))
    spans = window_spans(regions)
    embeddings = engine.embed_spans(samples, spans)
    weights = np.asarray([(e - s) / SAMPLE_RATE for s, e in spans], dtype=np.float32)
    # Every region keeps its windows 0.75 s apart (and its last one): short turns stay in.
    sparse = set(window_spans(regions, hop_s=CLUSTER_HOP_S))
    coarse = np.asarray([row for row, span in enumerate(spans) if span in sparse], dtype=int)
    assignment = cluster_windows(embeddings[coarse], weights[coarse], options)
    clusters = sorted(set(assignment.tolist()))

    speech = np.zeros(frames, dtype=bool)
    for start, end in regions:
        speech[to_frame(start) : max(to_frame(start) + 1, to_frame(end))] = True
    if not clusters:
        empty = np.zeros((0, engine.dimension), dtype=np.float32)
        return Diarization(duration_s, [], empty, _frame_scores(frames, options))

    centroids = _centroids(embeddings[coarse], assignment, clusters)
    winner = np.zeros(frames, dtype=int)
    for _ in range(RESEGMENT_PASSES):
        # The last column is a voice no cluster holds: speech that fits none (a stranger's
        # few words the clustering merged away) becomes a voice of its own.
        similarity = np.hstack(
            [embeddings @ centroids.T, np.full((len(spans), 1), options.new_voice_score)]
        )
        scores, weight = frame_scores(spans, similarity, frames)
        covered = speech & (weight > 0)
        winner[covered] = smooth_path(scores[covered], options.change_penalty)
        centroids = _pure_centroids(spans, embeddings, winner, covered, centroids)
    newcomer = _newcomer_centroid(spans, embeddings, winner, covered, len(centroids))
    room = len(centroids) < (options.num_speakers or options.max_speakers or MAX_SPEAKERS)
    if newcomer is not None and room:
        centroids = np.vstack([centroids, newcomer[None]])
    else:
        # No one new after all (or the hints forbid one): every frame to a known voice.
        scores = scores[:, : len(centroids)]
        winner[covered] = smooth_path(scores[covered], options.change_penalty)
    frame_conf = np.where(covered, _frame_confidence(scores, winner), 0.0)
    _fill_uncovered(winner, speech, covered)

    overlapped = np.zeros(frames, dtype=bool)
    for start, end in overlap or []:
        overlapped[to_frame(start) : to_frame(end)] = True
    overlapped &= speech
    second = _second_voices(winner, speech, overlapped, np.where(covered[:, None], scores, 0.0))
    turns = _turns(winner, speech, frame_conf, overlapped, second)
    _link_same_voice(turns, chunks or [])
    evidence = _run_evidence(samples, turns, spans, embeddings, engine)

    scores_out = np.round(frame_conf * 100).astype(np.int16) if options.confidence else None
    diarization = Diarization(
        duration_s,
        turns,
        centroids,
        scores_out,
        evidence=evidence,
        turn_evidence=_turn_evidence(turns, spans, embeddings),
    )
    diarization.identify(gallery, options)
    return diarization


def _voices_under(
    spans: list[tuple[int, int]], winner: np.ndarray, covered: np.ndarray
) -> Iterator[np.ndarray]:
    """For each window, the voices assigned to the covered frames under it."""
    for start, end in spans:
        a, b = to_frame(start), max(to_frame(start) + 1, to_frame(end))
        yield winner[a:b][covered[a:b]]


def _pure_centroids(
    spans: list[tuple[int, int]],
    embeddings: np.ndarray,
    winner: np.ndarray,
    covered: np.ndarray,
    centroids: np.ndarray,
) -> np.ndarray:
    """Each voice's centroid again, from the windows whose frames are all that voice's:
    windows straddling a change of speaker blur the clustering's centroids."""
    owner = np.full(len(spans), -1)
    for row, voices in enumerate(_voices_under(spans, winner, covered)):
        if len(voices) and (voices == voices[0]).all():
            owner[row] = voices[0]
    out = centroids.copy()
    for voice in range(len(centroids)):
        if (owner == voice).any():
            out[voice] = normalised_mean(embeddings[owner == voice])
    return out


def _newcomer_centroid(
    spans: list[tuple[int, int]],
    embeddings: np.ndarray,
    winner: np.ndarray,
    covered: np.ndarray,
    newcomer: int,
) -> np.ndarray | None:
    """The centroid of the frames no cluster held, from the windows mostly over them; none
    when they hold less than NEWCOMER_MIN_S of speech (a word too few to be anyone)."""
    if (winner[covered] == newcomer).sum() * FRAME_S < NEWCOMER_MIN_S:
        return None
    rows = [
        row
        for row, voices in enumerate(_voices_under(spans, winner, covered))
        if len(voices) and (voices == newcomer).mean() > 0.5
    ]
    if not rows:
        return None
    return normalised_mean(embeddings[rows])


def _frame_confidence(scores: np.ndarray, winner: np.ndarray) -> np.ndarray:
    """How clearly each frame's voice beats the next best (one voice: how well it fits)."""
    own = scores[np.arange(len(scores)), winner]
    if scores.shape[1] > 1:
        others = scores.copy()
        others[np.arange(len(scores)), winner] = -np.inf
        return np.clip((own - others.max(axis=1) + 0.1) / 0.3, 0.0, 1.0)
    return np.clip((own - 0.5) / 0.4, 0.0, 1.0)


def _run_evidence(
    samples: np.ndarray,
    turns: list[Turn],
    spans: list[tuple[int, int]],
    embeddings: np.ndarray,
    engine: EmbeddingEngine,
) -> dict[int, np.ndarray]:
    """Each stretch's own embedding: the mean of the windows that lie wholly inside it, or,
    for a stretch shorter than a window, the embedding of its own audio (never its
    neighbours')."""
    bounds: dict[int, list[tuple[int, int]]] = {}
    for turn in turns:
        if turn.overlapped:
            continue  # never matched (two voices at once)
        piece = (int(turn.start * SAMPLE_RATE), int(turn.end * SAMPLE_RATE))
        bounds.setdefault(turn.run, []).append(piece)
    starts = np.asarray([s for s, _ in spans], dtype=np.int64)
    ends = np.asarray([e for _, e in spans], dtype=np.int64)
    evidence: dict[int, np.ndarray] = {}
    for run, pieces in bounds.items():
        inside = np.zeros(len(spans), dtype=bool)
        for start, end in pieces:
            inside |= (starts >= start) & (ends <= end)
        if inside.any():
            evidence[run] = normalised_mean(embeddings[inside])
            continue
        audio = np.concatenate([samples[start:end] for start, end in pieces])
        if len(audio) >= MIN_EMBED_S * SAMPLE_RATE:
            evidence[run] = engine.embed(audio)
    return evidence


def _turn_evidence(
    turns: list[Turn], spans: list[tuple[int, int]], embeddings: np.ndarray
) -> dict[int, np.ndarray]:
    """Each turn's own embedding, from the windows wholly inside it, for turns that hold one:
    a stretch bridges short pauses, and when the clustering has put two similar voices
    together, a stranger's turn would otherwise be judged with the enrolled speaker's next
    one."""
    starts = np.asarray([s for s, _ in spans], dtype=np.int64)
    ends = np.asarray([e for _, e in spans], dtype=np.int64)
    # A region shorter than a window is one short span: too little to judge a turn alone by.
    whole = ends - starts >= int(WINDOW_S * SAMPLE_RATE)
    out: dict[int, np.ndarray] = {}
    for index, turn in enumerate(turns):
        if turn.overlapped:
            continue
        inside = (
            whole
            & (starts >= int(turn.start * SAMPLE_RATE))
            & (ends <= int(turn.end * SAMPLE_RATE))
        )
        if inside.any():
            out[index] = normalised_mean(embeddings[inside])
    return out


def _frame_scores(frames: int, options: DiarizationOptions) -> np.ndarray | None:
    return np.zeros(frames, dtype=np.int16) if options.confidence else None


def _fill_uncovered(winner: np.ndarray, speech: np.ndarray, covered: np.ndarray) -> None:
    """Speech no window covered (too short to embed) takes the nearest covered frame's cluster."""
    gaps = np.flatnonzero(speech & ~covered)
    known = np.flatnonzero(covered)
    if not len(gaps) or not len(known):
        return
    nearest = np.clip(np.searchsorted(known, gaps), 0, len(known) - 1)
    before = np.clip(nearest - 1, 0, len(known) - 1)
    pick = np.where(
        np.abs(known[before] - gaps) < np.abs(known[nearest] - gaps), known[before], known[nearest]
    )
    winner[gaps] = winner[pick]


def _second_voices(
    winner: np.ndarray, speech: np.ndarray, overlapped: np.ndarray, scores: np.ndarray
) -> dict[tuple[int, int], tuple[int, int]]:
    """The two voices of each stretch of overlapped frames (first frame, end frame).

    The first is the voice most of its frames chose. The second is the other voice speaking
    right before or after it (an overlap is most often one speaker starting before the other
    has finished); when the same voice speaks on both sides (a word said over someone's
    stretch), the voice its frames score best for after the first.
    """
    out: dict[tuple[int, int], tuple[int, int]] = {}
    gap = int(round(CONTINUED_WITHIN_S / FRAME_S))
    edges = np.flatnonzero(np.diff(np.concatenate([[0], overlapped.astype(int), [0]])))
    for start, end in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
        first = int(np.bincount(winner[start:end]).argmax())
        neighbours = [
            _voice_next_to(winner, speech, overlapped, start, -1, gap),
            _voice_next_to(winner, speech, overlapped, end - 1, 1, gap),
        ]
        others = [voice for voice in neighbours if voice is not None and voice != first]
        if others:
            second = others[0]
        else:
            mean = scores[start:end].mean(axis=0)
            mean[first] = -np.inf
            if len(mean) < 2 or not np.isfinite(mean.max()):
                continue
            second = int(np.argmax(mean))
        out[(start, end)] = (first, second)
    return out


def _voice_next_to(
    winner: np.ndarray,
    speech: np.ndarray,
    overlapped: np.ndarray,
    frame: int,
    step: int,
    gap: int,
) -> int | None:
    """The voice of the nearest clean speech frame from ``frame`` in direction ``step``, if
    no pause longer than ``gap`` frames comes first."""
    silent = 0
    index = frame + step
    while 0 <= index < len(winner) and silent <= gap:
        if speech[index] and not overlapped[index]:
            return int(winner[index])
        silent = 0 if speech[index] else silent + 1
        index += step
    return None


def _turns(
    winner: np.ndarray,
    speech: np.ndarray,
    confidence: np.ndarray,
    overlapped: np.ndarray,
    second_voices: dict[tuple[int, int], tuple[int, int]] | None = None,
) -> list[Turn]:
    """Turns of one voice each, in time order; an overlapped stretch is two turns, one per
    voice (``second_voices``), each linked to the clean turn of its voice it continues."""
    voices = winner.copy()
    for (start, end), (first, _) in (second_voices or {}).items():
        voices[start:end] = first
    turns = _voice_turns(voices, speech, confidence, overlapped)
    for (start, end), (_, second) in (second_voices or {}).items():
        turns.append(
            Turn(
                start=round(start * FRAME_S, 3),
                end=round(end * FRAME_S, 3),
                cluster=second,
                confidence=0.0,
                overlapped=True,
            )
        )
    turns.sort(key=lambda turn: (turn.start, turn.overlapped, turn.end))
    _measure_runs(turns)
    _link_continued(turns)
    return turns


def _link_continued(turns: list[Turn]) -> None:
    """Links each overlapped turn to the nearest clean turn of its voice that ends or starts
    within CONTINUED_WITHIN_S of it."""
    for turn in turns:
        if not turn.overlapped:
            continue
        best: tuple[float, float] | None = None
        for index, other in enumerate(turns):
            if other.overlapped or other.cluster != turn.cluster:
                continue
            pause = max(other.start - turn.end, turn.start - other.end, 0.0)
            if pause > CONTINUED_WITHIN_S:
                continue
            rank = (pause, -(other.end - other.start))
            if best is None or rank < best:
                best, turn.continues = rank, index


def _link_same_voice(turns: list[Turn], chunks: list[ChunkSpeakers]) -> None:
    """Links an overlapped turn that continues no clean turn of its voice to the clean turn
    of its voice that the segmentation model hears as the same local speaker, when most of
    the chunks holding the overlap point to that turn.

    In a chunk, the overlap's two local speakers are the voices the model hears in most of
    its frames; the one that is not its partner's (the voice speaking with it, known by the
    clean turn that partner continues) is this turn's. A clean turn of this voice in which
    that local speaker speaks alone for at least ``SAME_VOICE_SHARE`` of its frames in the
    chunk is the same voice twice over: the frames chose its voice, the model hears it.
    Overlap under ``SAME_VOICE_MIN_S`` is never linked.
    """
    for turn in turns:
        if not turn.overlapped or turn.continues is not None:
            continue
        partner = _partner_turn(turn, turns)
        if partner is None or _length(turn) < SAME_VOICE_MIN_S:
            continue
        holding = [chunk for chunk in chunks if _holds(chunk, turn)]
        votes: dict[int, int] = {}
        for chunk in holding:
            found = _same_voice_in(chunk, turn, partner, turns)
            if found is not None:
                votes[found] = votes.get(found, 0) + 1
        chosen = max(votes, key=lambda index: (votes[index], _length(turns[index])), default=None)
        # Only when most of the chunks that hear the overlap say so: in noise the model hears
        # a voice of the babble beside a stranger and ties it to someone else now and then.
        if chosen is not None and votes[chosen] * 2 > len(holding):
            turn.continues = chosen
            turn.same_voice = True


def _partner_turn(turn: Turn, turns: list[Turn]) -> Turn | None:
    """The clean turn that the other voice of ``turn``'s overlap continues, if it continues
    one next to it."""
    for other in turns:
        if (
            other is not turn
            and other.overlapped
            and (other.start, other.end) == (turn.start, turn.end)
            and other.continues is not None
            and not other.same_voice
        ):
            return turns[other.continues]
    return None


def _same_voice_in(
    chunk: ChunkSpeakers, turn: Turn, partner_turn: Turn, turns: list[Turn]
) -> int | None:
    """The longest clean turn of ``turn``'s voice whose speaker alone, in ``chunk`` (which
    holds the overlap), is the overlap's local speaker that is not the one of
    ``partner_turn``."""
    a, b = _chunk_frames(chunk, turn)
    heard = chunk.active[a:b].sum(axis=0)
    pair = np.flatnonzero(heard * 2 >= b - a)
    partner = _alone_speaker(chunk, partner_turn)
    if len(pair) != 2 or partner is None or partner not in pair:
        return None
    own = int(pair[pair != partner][0])
    best: tuple[float, int] | None = None
    for index, other in enumerate(turns):
        if other.overlapped or other.cluster != turn.cluster:
            continue
        if _alone_speaker(chunk, other) == own:
            rank = (_length(other), index)
            if best is None or rank > best:
                best = rank
    return None if best is None else best[1]


def _holds(chunk: ChunkSpeakers, turn: Turn) -> bool:
    """Whether the chunk holds the whole of the turn."""
    a, b = _chunk_frames(chunk, turn)
    return b - a >= max(1, round(_length(turn) / FRAME_S))


def _alone_speaker(chunk: ChunkSpeakers, turn: Turn) -> int | None:
    """The local speaker of ``chunk`` who speaks alone in at least ``SAME_VOICE_SHARE`` of
    the turn's frames that the chunk holds."""
    a, b = _chunk_frames(chunk, turn)
    if b <= a:
        return None
    active = chunk.active[a:b]
    alone = active & (active.sum(axis=1) == 1)[:, None]
    share = alone.sum(axis=0) / (b - a)
    speaker = int(np.argmax(share))
    return speaker if share[speaker] >= SAME_VOICE_SHARE else None


def _chunk_frames(chunk: ChunkSpeakers, turn: Turn) -> tuple[int, int]:
    """The turn's frames as rows of ``chunk.active`` (clipped to the chunk)."""
    a = round(turn.start / FRAME_S) - chunk.first_frame
    b = round(turn.end / FRAME_S) - chunk.first_frame
    return max(a, 0), min(b, len(chunk.active))


def _length(turn: Turn) -> float:
    return turn.end - turn.start


def _voice_turns(
    winner: np.ndarray, speech: np.ndarray, confidence: np.ndarray, overlapped: np.ndarray
) -> list[Turn]:
    turns: list[Turn] = []
    index, frames = 0, len(winner)
    while index < frames:
        if not speech[index]:
            index += 1
            continue
        end = index
        while (
            end < frames
            and speech[end]
            and winner[end] == winner[index]
            and overlapped[end] == overlapped[index]
        ):
            end += 1
        turns.append(
            Turn(
                start=round(index * FRAME_S, 3),
                end=round(end * FRAME_S, 3),
                cluster=int(winner[index]),
                confidence=round(float(confidence[index:end].mean()), 3),
                overlapped=bool(overlapped[index]),
            )
        )
        index = end
    return turns


def _measure_runs(turns: list[Turn]) -> None:
    """Sets each turn's ``run`` and ``run_s``: a voice's speech split by short pauses is one
    stretch."""
    first = runs = 0
    for index in range(1, len(turns) + 1):
        ends_run = (
            index == len(turns)
            or turns[index].cluster != turns[first].cluster
            or turns[index].overlapped
            or turns[first].overlapped
            or turns[index].start - turns[index - 1].end > RUN_GAP_S
        )
        if ends_run:
            run = turns[index - 1].end - turns[first].start
            for turn in turns[first:index]:
                turn.run_s = round(run, 3)
                turn.run = runs
            runs += 1
            first = index


def as_result(
    diarization: Diarization, options: DiarizationOptions, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The job's JSON result: segments, a per-speaker summary, optional frame confidence.

    It holds speaker ids (``speaker_label``), never names: a stored result must not keep a
    person's name past their erasure, so names are looked up when the result is read
    (``diarization.selectors.named_result``).
    """
    segments = []
    for turn in diarization.turns:
        label, reason = diarization.decision(turn, options.min_label_s)
        segment: dict[str, Any] = {
            "start": turn.start,
            "end": turn.end,
            "speaker_label": label,
            "confidence": turn.confidence,
            "reason": str(reason),
        }
        if turn.attribution is not None and turn.attribution.score is not None:
            segment["turn_score"] = turn.attribution.score
        if label is None:
            segment["unlabelled_reason"] = str(reason)
        segments.append(segment)
    # Only voices that label at least one segment are reported.
    speech: dict[str, float] = {}
    for segment in segments:
        if segment["speaker_label"] is not None:
            label = segment["speaker_label"]
            speech[label] = speech.get(label, 0.0) + segment["end"] - segment["start"]
    speakers: dict[str, dict[str, Any]] = {
        label: {"speaker_label": label, "enrolled": False, "speech_s": round(total, 3)}
        for label, total in speech.items()
    }
    for who in diarization.identified.values():
        entry = speakers.get(who.speaker_id)
        if entry is None:
            continue
        entry["enrolled"] = True
        if who.score > entry.get("score", -1.0):
            entry["score"] = round(who.score, 4)
            entry["second_best_score"] = who.second_best_score
    result: dict[str, Any] = {
        "duration": round(diarization.duration_s, 3),
        "segments": segments,
        "speakers": sorted(speakers.values(), key=lambda s: _first_start(segments, s)),
        "warnings": list(diarization.warnings),
    }
    if diarization.frame_confidence is not None:
        result["confidence"] = {
            "resolution": FRAME_S,
            "score": diarization.frame_confidence.tolist(),
        }
    result.update(extra or {})
    return result


def _first_start(segments: list[dict[str, Any]], speaker: dict[str, Any]) -> float:
    starts = [s["start"] for s in segments if s["speaker_label"] == speaker["speaker_label"]]
    return min(starts) if starts else float("inf")
