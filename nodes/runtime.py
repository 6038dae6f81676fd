"""What lives inside one pyannote node process: its engine, its gallery, its heartbeat."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from common.redis_client import redis_client
from nodes import registry
from voice.engines import EmbeddingEngine
from voice.gallery import EnrolledGallery

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GalleryEntry:
    tenant_id: str
    vector: np.ndarray
    model_id: str
    model_version: str
    reference_sha256: str


class Gallery:
    """Enrolled embeddings held in memory, per tenant."""

    def __init__(self) -> None:
        self._entries: dict[str, GalleryEntry] = {}
        self._lock = threading.Lock()
        # Bumped on every change; a tenant's scoring matrix is rebuilt only when it moved.
        self._version = 0
        self._matrices: dict[tuple[str, str], tuple[int, EnrolledGallery]] = {}

    def put(self, speaker_id: str, entry: GalleryEntry) -> None:
        with self._lock:
            self._entries[speaker_id] = entry
            self._version += 1

    def put_many(self, entries: dict[str, GalleryEntry]) -> None:
        with self._lock:
            self._entries.update(entries)
            self._version += 1

    def get(self, speaker_id: str) -> GalleryEntry | None:
        with self._lock:
            return self._entries.get(speaker_id)

    def remove(self, speaker_id: str) -> bool:
        with self._lock:
            removed = self._entries.pop(speaker_id, None) is not None
            self._version += 1
            return removed

    def speaker_ids(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def for_tenant(self, tenant_id: str) -> dict[str, GalleryEntry]:
        with self._lock:
            return {k: v for k, v in self._entries.items() if v.tenant_id == tenant_id}

    def matrix_for(self, tenant_id: str, model_id: str) -> EnrolledGallery:
        """The tenant's voiceprints of one model as one matrix, for scoring many at once."""
        with self._lock:
            cached = self._matrices.get((tenant_id, model_id))
            if cached is not None and cached[0] == self._version:
                return cached[1]
            held = [
                (speaker_id, entry.vector)
                for speaker_id, entry in self._entries.items()
                if entry.tenant_id == tenant_id and entry.model_id == model_id
            ]
            vectors = np.stack([v for _, v in held]) if held else np.zeros((0, 1), np.float32)
            gallery = EnrolledGallery([s for s, _ in held], vectors)
            self._matrices[(tenant_id, model_id)] = (self._version, gallery)
            return gallery

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class NodeRuntime:
    def __init__(self, node_id: str, engine: EmbeddingEngine, pool: str = registry.DEFAULT_POOL):
        self.node_id = node_id
        self.engine = engine
        # Which tenants this node serves (nodes/pools.py).
        self.pool = pool
        self.boot_id = uuid.uuid4().hex
        self.booted_at = timezone.now()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.gallery = Gallery()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def queue(self) -> str:
        return node_queue(self.node_id)

    def heartbeat(self) -> registry.Heartbeat:
        return registry.Heartbeat(
            node_id=self.node_id,
            engine=self.engine.engine_name,
            model_id=self.engine.model_id,
            model_version=self.engine.model_version,
            boot_id=self.boot_id,
            host=self.host,
            pid=self.pid,
            gallery_size=len(self.gallery),
            sent_at=time.time(),
            pool=self.pool,
        )

    def start_heartbeats(self, beat: Callable[[], None]) -> None:
        """Calls ``beat`` every NODE_HEARTBEAT_INTERVAL_S on a thread of its own."""

        def loop() -> None:
            while not self._stop.wait(settings.NODE_HEARTBEAT_INTERVAL_S):
                try:
                    beat()
                except Exception:  # a broken beat must not kill the node; the next one retries
                    logger.exception("heartbeat of node %s failed", self.node_id)
                finally:
                    close_old_connections()

        self._thread = threading.Thread(target=loop, name=f"heartbeat-{self.node_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        redis_client().delete(registry.heartbeat_key(self.node_id))


def node_queue(node_id: str) -> str:
    return f"node.{node_id}"


_current: NodeRuntime | None = None


def install(runtime: NodeRuntime) -> None:
    global _current
    _current = runtime


def current_node() -> NodeRuntime:
    if _current is None:
        raise RuntimeError("this process is not a pyannote node (start one with run_node)")
    return _current
