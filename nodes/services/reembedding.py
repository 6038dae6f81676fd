"""Computing the voiceprints a model is missing ahead of its roll-out (``manage.py reembed``),
so that nodes started with it load them instead of embedding every recording on start."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db.models import Q, QuerySet

from enrollment.models import WARMABLE_STATUSES, Speaker, Voiceprint
from nodes.services.node_work import NodeWorkError, stored_or_computed_voiceprint
from voice.engines import EmbeddingEngine

# computed_by of the voiceprints it stores.
REEMBED_AUTHOR = "reembed"


@dataclass
class ReembedProgress:
    total: int
    computed: int = 0
    failed: dict[uuid.UUID, str] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return self.computed + len(self.failed)


def speakers_missing(
    model_id: str, model_version: str, tenant_ids: list[uuid.UUID] | None = None
) -> QuerySet[Speaker]:
    """Warmable speakers with no stored voiceprint of that model, oldest first."""
    stored = Voiceprint.objects.filter(model_id=model_id, model_version=model_version)
    speakers = Speaker.objects.filter(enrollment_status__in=WARMABLE_STATUSES).exclude(
        id__in=stored.values("speaker_id")
    )
    if tenant_ids is not None:
        speakers = speakers.filter(tenant_id__in=tenant_ids)
    return speakers.order_by("created_at", "id")


def reembed(
    engine: EmbeddingEngine,
    *,
    batch_size: int,
    tenant_ids: list[uuid.UUID] | None = None,
    report: Callable[[ReembedProgress], None] = lambda progress: None,
) -> ReembedProgress:
    """Computes and stores, from the references, every voiceprint of the engine's model that is
    missing, oldest speaker first, ``report`` after each batch.

    Each one is stored as soon as it is computed, so a run that stops is resumed by running it
    again, and a second run finds nothing to do. A speaker whose reference cannot give one
    (gone, changed, no speech, the blob store down) is reported and left for the next run.
    """
    missing = speakers_missing(engine.model_id, engine.model_version, tenant_ids)
    progress = ReembedProgress(total=missing.count())
    # Keyset pages: what failed stays missing, so an offset would skip or repeat speakers.
    after: Q = Q()
    while batch := list(missing.filter(after)[:batch_size]):
        for speaker in batch:
            try:
                stored_or_computed_voiceprint(engine, speaker, REEMBED_AUTHOR)
            except NodeWorkError as exc:
                progress.failed[speaker.id] = exc.code
            else:
                progress.computed += 1
        last = batch[-1]
        after = Q(created_at__gt=last.created_at) | Q(created_at=last.created_at, id__gt=last.id)
        report(progress)
    return progress
