"""How a warm task ends once its retries are used up: an outage hands the work back to the
reconciler (the speaker stays pending), anything else fails the node's assignment."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.db import OperationalError
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError

from enrollment.models import Speaker
from nodes import tasks
from nodes.models import AssignmentState, NodeAssignment
from nodes.services import node_work
from tests.factories import enrollment_form

NODE = "node-x"


class EmptyGallery:
    def get(self, speaker_id):
        return None

    def put(self, speaker_id, entry):
        raise AssertionError("these warms end before an embedding is computed")


class Runtime:
    node_id = NODE
    pool = "default"
    # A model the store holds no voiceprint of: the node goes to the reference recording.
    engine = SimpleNamespace(model_id="other-model", model_version="1")
    gallery = EmptyGallery()


@pytest.fixture
def queued_speaker(api, settings, monkeypatch):
    settings.ENROLLMENT_ACK_WAIT_S = 0.0
    created = api.post("/v1/modules/scaiecho/speakers", enrollment_form(), format="multipart")
    speaker = Speaker.objects.get(id=created.json()["data"]["id"])
    NodeAssignment.objects.create(
        speaker=speaker, node_id=NODE, state=AssignmentState.QUEUED, queued_at=timezone.now()
    )
    monkeypatch.setattr(tasks, "current_node", lambda: Runtime())
    return speaker


def last_attempt(speaker: Speaker, error: Exception, settings, monkeypatch) -> str:
    def warm_here(runtime, speaker_id):
        raise error

    monkeypatch.setattr(node_work, "warm_here", warm_here)
    # The task body alone, as it runs on its last allowed retry.
    outcome = tasks.warm_speaker.apply(
        args=[str(speaker.id)], retries=settings.NODE_TASK_MAX_RETRIES
    )
    return str(outcome.get())


@pytest.mark.parametrize(
    "outage",
    [
        node_work.NodeWorkError("blob_unavailable", "read timeout", permanent=False),
        RedisConnectionError("connection refused"),
        OperationalError("server closed the connection"),
    ],
    ids=["blob-store", "redis", "database"],
)
def test_an_outage_outlasting_the_retries_leaves_the_speaker_pending(
    queued_speaker, outage, settings, monkeypatch
):
    assert last_attempt(queued_speaker, outage, settings, monkeypatch) == "deferred"
    assignment = NodeAssignment.objects.get(speaker=queued_speaker, node_id=NODE)
    assert assignment.state == AssignmentState.QUEUED and str(outage)[:10] in assignment.last_error
    queued_speaker.refresh_from_db()
    assert queued_speaker.enrollment_status == "pending"


@pytest.mark.parametrize(
    "error",
    [
        node_work.NodeWorkError("reference_hash_mismatch", "changed", permanent=True),
        ValueError("a bug"),
    ],
    ids=["bad-recording", "bug"],
)
def test_anything_else_fails_the_assignment(queued_speaker, error, settings, monkeypatch):
    assert last_attempt(queued_speaker, error, settings, monkeypatch) == "failed"
    assignment = NodeAssignment.objects.get(speaker=queued_speaker, node_id=NODE)
    assert assignment.state == AssignmentState.FAILED
    queued_speaker.refresh_from_db()
    assert queued_speaker.enrollment_status == "failed"


def test_a_reference_gone_from_the_store_fails_at_once(queued_speaker, s3_blob_store):
    """Not an outage: the store answers that the recording is not there, so retrying (or the
    reconciler re-sending) cannot help."""
    s3_blob_store.delete_all_versions(queued_speaker.reference_blob_key)
    outcome = tasks.warm_speaker.apply(args=[str(queued_speaker.id)], retries=0)
    assert outcome.get() == "failed"
    assignment = NodeAssignment.objects.get(speaker=queued_speaker, node_id=NODE)
    assert assignment.state == AssignmentState.FAILED
    assert assignment.last_error.startswith("reference_missing")
