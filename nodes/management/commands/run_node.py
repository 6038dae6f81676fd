"""Run a pyannote node: a Celery worker on its own durable queue ``node.<node-id>``."""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np
from celery import current_app
from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.database_roles import UnsafeDatabaseRole, check_database_role
from nodes.api.fields import NODE_ID_PATTERN
from nodes.pools import this_node_pool, unknown_tenant_slugs
from nodes.runtime import NodeRuntime, install
from nodes.services import node_work
from voice.engines import get_engine
from voice.vad import get_vad

logger = logging.getLogger(__name__)

NODE_ID = re.compile(NODE_ID_PATTERN)


def warm_up_models(runtime: NodeRuntime) -> None:
    """One pass through both models, so that the first enrollment is not the slow one."""
    noise = np.random.default_rng(0).normal(0, 0.01, 3 * 16_000).astype(np.float32)
    get_vad().speech_regions(noise)
    runtime.engine.voiceprint(noise)


class Command(BaseCommand):
    help = "Run a pyannote node that holds enrolled speakers' embeddings in memory."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("node_id")
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args: Any, **options: Any) -> None:
        node_id = options["node_id"]
        if not NODE_ID.match(node_id):
            raise CommandError("node ids are 1-64 letters, digits, '.', '_' or '-'")
        # Before anything of the node starts (models, registry, the worker's own check later).
        try:
            check_database_role(f"node {node_id}")
        except UnsafeDatabaseRole as refusal:
            raise CommandError(str(refusal)) from refusal
        runtime = NodeRuntime(node_id, get_engine(), pool=this_node_pool())
        unknown = unknown_tenant_slugs()
        if unknown:
            logger.warning("NODE_POOLS places tenants that do not exist: %s", ", ".join(unknown))
        warm_up_models(runtime)
        install(runtime)
        queued = node_work.start_node(runtime)
        node_work.heartbeat(runtime)
        runtime.start_heartbeats(lambda: node_work.heartbeat(runtime))
        logger.info(
            "node %s (pool %s, boot %s, model %s %s) online; %d speakers queued to warm",
            node_id,
            runtime.pool,
            runtime.boot_id,
            runtime.engine.model_id,
            runtime.engine.model_version,
            queued,
        )
        try:
            current_app.worker_main(
                [
                    "worker",
                    "--pool",
                    "solo",
                    "--queues",
                    runtime.queue,
                    "--hostname",
                    f"{node_id}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "--loglevel",
                    options["loglevel"],
                ]
            )
        finally:
            runtime.stop()
