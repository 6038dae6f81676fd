"""The duplicate check's view of a tenant's voiceprints: held per process, refreshed by what
changed in the voiceprint store, so that an enrollment decrypts only voiceprints it has not
seen rather than every voiceprint of the tenant.

Each refresh reads the store's fingerprint of the tenant and model (count, sum and maximum of
the row ids: one index-only scan, nothing decrypted). Rows are never updated, only inserted
and deleted, and ids are never reused, so an unchanged fingerprint means an unchanged set.
When it moved, the rows above the highest id held are opened; if what is held then matches
neither the fingerprint read before nor the store's fingerprint now (a deletion by erasure, or
an insert that committed late with a lower id), the list of row ids (ids only) is compared and
only what is missing is opened. A match is confirmed against the store before it is reported,
so an erased speaker is never reported even if a change slipped past the fingerprint.
"""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
from django.conf import settings
from django.db.models import Count, Max, QuerySet, Sum

from enrollment.models import Voiceprint
from enrollment.voiceprints import open_voiceprints

OPEN_BATCH = 1000
# How often a match may turn out to be stale (then the gallery is resynchronised) per search.
CONFIRM_ATTEMPTS = 3

Fingerprint = tuple[int, int, int]


class TenantGallery:
    """One tenant's voiceprints of one model, as a matrix that grows and shrinks in place."""

    def __init__(self, tenant_id: uuid.UUID, model_id: str, model_version: str):
        self.tenant_id = tenant_id
        self.model_id = model_id
        self.model_version = model_version
        # Every row seen, by speaker (a refused row is counted, but holds no vector).
        self._row_of: dict[uuid.UUID, int] = {}
        # The held rows' fingerprint, kept as rows come and go (not summed per request).
        self._row_total = 0
        self._row_top = 0
        self._slot_of: dict[uuid.UUID, int] = {}
        self._speakers: list[uuid.UUID] = []
        self._matrix = np.zeros((0, 0), dtype=np.float32)
        self._lock = threading.Lock()

    def _rows(self) -> QuerySet[Voiceprint]:
        return Voiceprint.objects.filter(
            tenant_id=self.tenant_id, model_id=self.model_id, model_version=self.model_version
        )

    def _fingerprint(self) -> Fingerprint:
        row = self._rows().aggregate(n=Count("id"), total=Sum("id"), top=Max("id"))
        return (row["n"], int(row["total"] or 0), int(row["top"] or 0))

    def _held_fingerprint(self) -> Fingerprint:
        return (len(self._row_of), self._row_total, self._row_top)

    def __len__(self) -> int:
        with self._lock:
            return len(self._speakers)

    def refresh(self) -> None:
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        stored = self._fingerprint()
        held = self._held_fingerprint()
        if stored == held:
            return
        after = held[2]
        while highest := self._open(self._rows().filter(id__gt=after).order_by("id")[:OPEN_BATCH]):
            after = highest
        # Only rows were added (the usual case, an enrollment): the set now is the one the store
        # had when asked, without asking again.
        if self._held_fingerprint() == stored or self._fingerprint() == self._held_fingerprint():
            return
        listing = dict(self._rows().values_list("speaker_id", "id"))
        for speaker_id, row_id in list(self._row_of.items()):
            if listing.get(speaker_id) != row_id:
                self._drop(speaker_id)
        missing = [
            row_id for speaker_id, row_id in listing.items() if speaker_id not in self._row_of
        ]
        for start in range(0, len(missing), OPEN_BATCH):
            self._open(self._rows().filter(id__in=missing[start : start + OPEN_BATCH]))

    def _open(self, rows: QuerySet[Voiceprint]) -> int:
        """Opens those rows (one query for their keys); returns the highest id, 0 for none."""
        fetched = list(rows.values_list("id", "speaker_id", "ciphertext", "vector_sha256"))
        opened = open_voiceprints(
            ((s, c, h) for _, s, c, h in fetched), self.model_id, self.model_version
        )
        for row_id, speaker_id, _, _ in fetched:
            self._drop(speaker_id)  # a replaced row
            self._row_of[speaker_id] = row_id
            self._row_total += row_id
            self._row_top = max(self._row_top, row_id)
            vector = opened.vectors.get(speaker_id)
            if vector is not None:
                self._add(speaker_id, vector)
        return max((row[0] for row in fetched), default=0)

    def _add(self, speaker_id: uuid.UUID, vector: np.ndarray) -> None:
        n = len(self._speakers)
        if n == len(self._matrix):  # full: double the capacity
            grown = np.zeros((max(16, 2 * n), vector.shape[0]), dtype=np.float32)
            if n:
                grown[:n] = self._matrix[:n]
            self._matrix = grown
        self._matrix[n] = vector
        self._slot_of[speaker_id] = n
        self._speakers.append(speaker_id)

    def _drop(self, speaker_id: uuid.UUID) -> None:
        row_id = self._row_of.pop(speaker_id, None)
        if row_id is not None:
            self._row_total -= row_id
            if row_id == self._row_top:  # only when the newest row goes
                self._row_top = max(self._row_of.values(), default=0)
        slot = self._slot_of.pop(speaker_id, None)
        if slot is None:
            return
        last = len(self._speakers) - 1
        moved = self._speakers.pop()
        if slot != last:  # the last row fills the hole
            self._matrix[slot] = self._matrix[last]
            self._speakers[slot] = moved
            self._slot_of[moved] = slot

    def best_match(self, vector: np.ndarray) -> tuple[str, float] | None:
        """The closest voiceprint held and its cosine score (inputs are L2-normalised), once the
        store confirms that it is still there."""
        with self._lock:
            for _ in range(CONFIRM_ATTEMPTS):
                n = len(self._speakers)
                if not n:
                    return None
                scores = self._matrix[:n] @ np.asarray(vector, dtype=np.float32)
                best = int(np.argmax(scores))
                speaker_id = self._speakers[best]
                if self._rows().filter(id=self._row_of[speaker_id]).exists():
                    return str(speaker_id), float(scores[best])
                self._refresh()
            return None


_galleries: dict[tuple[uuid.UUID, str, str], TenantGallery] = {}
_last_used: dict[tuple[uuid.UUID, str, str], float] = {}
_galleries_lock = threading.Lock()


def tenant_gallery(tenant_id: uuid.UUID, model_id: str, model_version: str) -> TenantGallery:
    """This process's gallery of the tenant for that model, refreshed from the store.

    Galleries unused for ``DUPLICATE_GALLERY_IDLE_S``, and the least recently used beyond
    ``DUPLICATE_GALLERY_MAX_TENANTS``, are dropped here: their decrypted voiceprints (erased
    ones included) should not outlive the enrollments that needed them.
    """
    key = (tenant_id, model_id, model_version)
    now = time.monotonic()
    with _galleries_lock:
        _drop_unused(now)
        gallery = _galleries.setdefault(key, TenantGallery(tenant_id, model_id, model_version))
        _last_used[key] = now
    gallery.refresh()
    return gallery


def _drop_unused(now: float) -> None:
    idle_s = settings.DUPLICATE_GALLERY_IDLE_S
    by_use = sorted(_last_used, key=_last_used.__getitem__)
    surplus = len(by_use) - (settings.DUPLICATE_GALLERY_MAX_TENANTS - 1)
    for rank, key in enumerate(by_use):
        if rank < surplus or now - _last_used[key] > idle_s:
            del _galleries[key], _last_used[key]
