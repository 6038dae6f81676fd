"""Nodes load voiceprints from the store instead of embedding the recordings again (real node
processes, moto S3): a restarted node is warm with every speaker even with the recordings gone,
a tampered stored vector is refused and computed again, another model's vector is not used."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.management import call_command

from common.redis_client import redis_client
from enrollment.models import Speaker, Voiceprint
from nodes import registry
from nodes.models import NodeAssignment
from tests.factories import (
    enroll,
    make_speaker,
    store_voiceprint,
    stored_voiceprint,
)
from tests.live import wait_for

pytestmark = [pytest.mark.live, pytest.mark.slow]

SPEAKERS = "/v1/modules/scaiecho/speakers"
NODES = "/v1/modules/scaiecho/nodes"


def status(speaker_id: str) -> str:
    return Speaker.objects.get(id=speaker_id).enrollment_status


def voiceprints_missing(api, node_id: str) -> int:
    [node] = [n for n in api.get(NODES).json()["data"] if n["node_id"] == node_id]
    return node["voiceprints_missing"]


def made_by_an_older_model(speaker_ids: list[str]) -> str:
    """Relabels the speakers' stored voiceprints as another version's: the store as a node
    started with a new version of the model finds it. Returns the version nodes run."""
    current = Voiceprint.objects.filter(speaker_id__in=speaker_ids)
    version = current.values_list("model_version", flat=True).first()
    assert current.update(model_version="an-older-version") == len(speaker_ids)
    return version


def stored_only_speakers(like: Speaker, count: int) -> list[str]:
    """Ready speakers with a stored voiceprint of the nodes' model and no recording at all."""
    row = Voiceprint.objects.get(speaker=like)
    made = []
    for i in range(count):
        speaker = make_speaker(like.tenant, f"Stored {i}")
        Speaker.objects.filter(id=speaker.id).update(
            embedding_model_id=row.model_id, embedding_model_version=row.model_version
        )
        speaker.refresh_from_db()
        vector = np.random.default_rng(i).normal(size=256).astype(np.float32)
        store_voiceprint(speaker, vector / np.linalg.norm(vector))
        made.append(str(speaker.id))
    return made


def test_a_restarted_node_is_warm_with_every_speaker_without_reading_a_recording(
    cluster, api, s3_blob_store
):
    (node_a,) = cluster.start("node-a")
    enrolled = enroll(api)
    assert enrolled["enrollment_status"] == "ready"
    speaker = Speaker.objects.get(id=enrolled["id"])
    speaker_ids = [enrolled["id"], *stored_only_speakers(speaker, 3)]

    node_a.stop()
    # With the reference gone, a node that fetched it would fail (reference_missing).
    s3_blob_store.delete_all_versions(speaker.reference_blob_key)
    node_a.start()

    # The gallery is loaded before the node's first heartbeat: warm as soon as it is online.
    boot = registry.live_heartbeats()["node-a"].boot_id
    for speaker_id in speaker_ids:
        held = NodeAssignment.objects.get(speaker_id=speaker_id, node_id="node-a")
        assert (held.state, held.boot_id) == ("warm", boot)
    warm = redis_client().smembers(registry.node_warm_key("node-a"))
    assert {str(s) for s in warm} == set(speaker_ids)
    assert registry.live_heartbeats()["node-a"].gallery_size == 4
    log = node_a.log()
    assert "loaded 4 stored voiceprints" in log
    # Not on this boot, nor when the enrollment fanned out: a vector copy, no embedding.
    assert "computed the voiceprint" not in log and "reference_missing" not in log


@pytest.mark.parametrize("tamper", ["stamp", "ciphertext"])
def test_a_tampered_stored_voiceprint_is_refused_and_computed_again(cluster, api, tamper):
    data = enroll(api)  # no node yet: pending
    row = Voiceprint.objects.get(speaker_id=data["id"])
    if tamper == "stamp":
        Voiceprint.objects.filter(id=row.id).update(vector_sha256="0" * 64)
    else:
        altered = bytearray(row.ciphertext)
        altered[-1] ^= 0x01
        Voiceprint.objects.filter(id=row.id).update(ciphertext=bytes(altered))

    (node_a,) = cluster.start("node-a")
    wait_for(lambda: status(data["id"]) == "ready", what="speaker to turn ready")

    replaced = Voiceprint.objects.get(speaker_id=data["id"])
    assert replaced.id != row.id and replaced.computed_by == "node:node-a"
    assert stored_voiceprint(data["id"]).shape == (256,)  # decrypts and matches its stamp
    log = node_a.log()
    assert "refused a stored voiceprint" in log
    assert f"computed the voiceprint of {data['id']} from its reference" in log


def test_another_models_voiceprint_is_not_used_and_erasure_removes_both(cluster, api):
    data = enroll(api)
    preflight = Voiceprint.objects.get(speaker_id=data["id"])
    Voiceprint.objects.filter(id=preflight.id).update(model_version="an-older-version")

    cluster.start("node-a")
    wait_for(lambda: status(data["id"]) == "ready", what="speaker to turn ready")

    rows = {
        (r.model_version, r.computed_by) for r in Voiceprint.objects.filter(speaker_id=data["id"])
    }
    assert rows == {
        ("an-older-version", "preflight"),
        (preflight.model_version, "node:node-a"),
    }
    assert api.delete(f"{SPEAKERS}/{data['id']}").status_code == 200
    assert not Voiceprint.objects.filter(speaker_id=data["id"]).exists()


def test_a_node_with_another_model_version_computes_its_own_while_holding_what_it_has(cluster, api):
    (node_a,) = cluster.start("node-a")
    enrolled = [enroll(api)["id"] for _ in range(2)]
    stored_only = stored_only_speakers(Speaker.objects.get(id=enrolled[0]), 1)
    node_a.stop()
    version = made_by_an_older_model(enrolled)
    # The stored-only speaker has a voiceprint of the nodes' version: it is not missing.
    assert voiceprints_missing(api, "node-a") == 2

    node_a.start()

    # Online with what the store gave it, the others queued to be computed from the references.
    boot = registry.live_heartbeats()["node-a"].boot_id
    held = NodeAssignment.objects.get(speaker_id=stored_only[0], node_id="node-a")
    assert (held.state, held.boot_id) == ("warm", boot)
    wait_for(lambda: voiceprints_missing(api, "node-a") == 0, what="the voiceprints computed")
    for speaker_id in enrolled:
        rows = Voiceprint.objects.filter(speaker_id=speaker_id)
        assert {(r.model_version, r.computed_by) for r in rows} == {
            ("an-older-version", "preflight"),
            (version, "node:node-a"),
        }
        assert f"computed the voiceprint of {speaker_id} from its reference" in node_a.log()
    wait_for(
        lambda: all(
            NodeAssignment.objects.get(speaker_id=s, node_id="node-a").boot_id == boot
            for s in enrolled
        ),
        what="the computed speakers warm on this boot",
    )


def test_reembed_fills_the_store_so_a_node_started_afterwards_reads_no_recording(
    cluster, api, s3_blob_store
):
    (node_a,) = cluster.start("node-a")
    enrolled = [enroll(api)["id"] for _ in range(2)]
    node_a.stop()
    version = made_by_an_older_model(enrolled)
    assert voiceprints_missing(api, "node-a") == 2

    out = io.StringIO()
    call_command("reembed", "--model", "resemblyzer", "--version", version, stdout=out)

    assert "2/2 speakers: 2 computed, 0 failed" in out.getvalue()
    assert voiceprints_missing(api, "node-a") == 0
    assert set(
        Voiceprint.objects.filter(model_version=version).values_list("computed_by", flat=True)
    ) == {"reembed"}
    # With the references gone, a node that fetched one would fail (reference_missing).
    for speaker in Speaker.objects.filter(id__in=enrolled):
        s3_blob_store.delete_all_versions(speaker.reference_blob_key)
    node_a.start()

    boot = registry.live_heartbeats()["node-a"].boot_id
    for speaker_id in enrolled:
        held = NodeAssignment.objects.get(speaker_id=speaker_id, node_id="node-a")
        assert (held.state, held.boot_id) == ("warm", boot)
    log = node_a.log()
    assert "loaded 2 stored voiceprints" in log
    assert "computed the voiceprint" not in log and "reference_missing" not in log
