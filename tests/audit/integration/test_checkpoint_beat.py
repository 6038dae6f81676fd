"""The orchestrator worker's beat (a real Celery process) makes the checkpoints: on the first
event, after AUDIT_CHECKPOINT_INTERVAL_S when events came, and early after
AUDIT_CHECKPOINT_EVERY_EVENTS events."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.checkpoints import read_series
from audit.services import ANCHOR_CURRENT, record_event, verify_chain
from tests.live import OrchestratorProcess, node_environment, wait_for

pytestmark = [pytest.mark.live, pytest.mark.slow]

INTERVAL_S = 8.0
EVERY_EVENTS = 5


def test_the_beat_makes_checkpoints_at_the_interval_and_the_count(
    live_db, moto_server, settings, tmp_path
):
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    settings.AUDIT_SIGNING_KEY = base64.b64encode(raw).decode()
    env = node_environment(moto_server, settings.S3_BUCKET)
    env.update(
        {
            "AUDIT_SIGNING_KEY": settings.AUDIT_SIGNING_KEY,
            "AUDIT_CHECKPOINT_CHECK_S": "0.5",
            "AUDIT_CHECKPOINT_INTERVAL_S": str(INTERVAL_S),
            "AUDIT_CHECKPOINT_EVERY_EVENTS": str(EVERY_EVENTS),
        }
    )
    orchestrator = OrchestratorProcess(env, tmp_path, beat=True).start()
    try:

        def latest_counter() -> int:
            latest = read_series().latest
            return latest.counter if latest else 0

        first_event = record_event("test.event", actor="system")
        wait_for(lambda: latest_counter() == 1, timeout_s=30, what="the first checkpoint")
        first = read_series().latest
        assert first.seq == first_event.seq

        # One event: neither the count nor the interval is reached for a while.
        lone = record_event("test.event", actor="system")
        wait_for(lambda: latest_counter() == 2, timeout_s=INTERVAL_S + 20, what="the interval")
        second = read_series().latest
        assert second.seq == lone.seq
        assert (second.made_at - first.made_at).total_seconds() >= INTERVAL_S

        # EVERY_EVENTS events: signed at the next look, well before the interval.
        burst = [record_event("test.event", actor="system") for _ in range(EVERY_EVENTS)]
        wait_for(lambda: latest_counter() == 3, timeout_s=INTERVAL_S + 20, what="the count")
        third = read_series().latest
        assert third.seq == burst[-1].seq
        assert (third.made_at - second.made_at).total_seconds() < INTERVAL_S

        verdict = verify_chain()
        assert verdict.intact and verdict.anchor == ANCHOR_CURRENT
        assert verdict.checkpoint.counter == 3
    finally:
        orchestrator.stop()
        print(orchestrator.log())
