"""The voiceprint store: vectors bound to their speaker and model, stamped, written once,
never after an erasure; and the duplicate check, which decrypts each voiceprint once per
process and never matches an erased speaker."""

from __future__ import annotations

import numpy as np
import pytest

from audit.models import AuditEvent
from data_keys.models import DataKey
from enrollment import galleries, voiceprints
from enrollment.galleries import tenant_gallery
from enrollment.models import Voiceprint
from enrollment.services import erase_speaker
from enrollment.voiceprints import (
    VoiceprintRefused,
    load_voiceprint,
    store_computed_voiceprint,
)
from tests.factories import enrollment_form, make_speaker, make_tenant, store_voiceprint

pytestmark = pytest.mark.django_db

URL = "/v1/modules/scaiecho/speakers"


def unit(seed: int, dimension: int = 8) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=dimension).astype(np.float32)
    return vector / np.linalg.norm(vector)


def test_a_stored_voiceprint_reads_back_only_for_its_speaker_model_and_stamp(tenant):
    speaker, other = make_speaker(tenant), make_speaker(tenant, "Other")
    store_voiceprint(speaker, unit(1))
    assert np.allclose(load_voiceprint(speaker.id, "m", "v"), unit(1))
    assert load_voiceprint(speaker.id, "m", "v2") is None  # none of that model

    row = Voiceprint.objects.get(speaker=speaker)
    Voiceprint.objects.filter(id=row.id).update(model_version="v2")  # relabelled
    with pytest.raises(VoiceprintRefused, match="does not belong"):
        load_voiceprint(speaker.id, "m", "v2")
    Voiceprint.objects.filter(id=row.id).update(model_version="v", speaker=other)  # moved
    with pytest.raises(VoiceprintRefused, match="does not belong"):
        load_voiceprint(other.id, "m", "v")
    Voiceprint.objects.filter(id=row.id).update(speaker=speaker, vector_sha256="0" * 64)
    with pytest.raises(VoiceprintRefused, match="stamp"):
        load_voiceprint(speaker.id, "m", "v")


def test_the_first_computation_is_kept_and_a_refused_one_is_replaced(tenant):
    speaker = make_speaker(tenant)
    store_voiceprint(speaker, unit(1))
    first = Voiceprint.objects.get(speaker=speaker)

    stored = store_computed_voiceprint(
        speaker.id,
        model_id="m",
        model_version="v",
        vector=unit(2),
        computed_by="node:a",
        replace=False,
    )
    assert stored is False and Voiceprint.objects.get(speaker=speaker) == first

    assert store_computed_voiceprint(
        speaker.id,
        model_id="m",
        model_version="v",
        vector=unit(2),
        computed_by="node:a",
        replace=True,
    )
    replaced = Voiceprint.objects.get(speaker=speaker)
    assert replaced.id > first.id and replaced.computed_by == "node:a"
    assert np.allclose(load_voiceprint(speaker.id, "m", "v"), unit(2))


def test_erasure_deletes_every_stored_voiceprint_and_nothing_is_stored_after(tenant):
    speaker = make_speaker(tenant)
    store_voiceprint(speaker, unit(1))
    store_computed_voiceprint(
        speaker.id,
        model_id="m",
        model_version="v2",
        vector=unit(2),
        computed_by="node:a",
        replace=False,
    )
    assert Voiceprint.objects.filter(speaker=speaker).count() == 2

    erase_speaker(speaker, reason="erasure_requested", actor="test")

    assert not Voiceprint.objects.filter(speaker=speaker).exists()
    assert not DataKey.objects.filter(speaker_id=speaker.id).exists()
    event = AuditEvent.objects.get(action="speaker.erased", speaker_id=speaker.id)
    assert event.details["voiceprints_deleted"] == 2
    # A node that computed it meanwhile stores nothing once the erasure has committed.
    assert not store_computed_voiceprint(
        speaker.id,
        model_id="m",
        model_version="v3",
        vector=unit(3),
        computed_by="node:a",
        replace=False,
    )
    assert not Voiceprint.objects.filter(speaker=speaker).exists()


def test_a_match_whose_row_is_gone_is_not_reported(tenant):
    kept, gone = make_speaker(tenant), make_speaker(tenant, "Gone")
    store_voiceprint(kept, unit(1))
    store_voiceprint(gone, unit(2))
    gallery = tenant_gallery(tenant.id, "m", "v")
    assert gallery.best_match(unit(2))[0] == str(gone.id)

    # Deleted behind the gallery's back: the match is checked against the store.
    Voiceprint.objects.filter(speaker=gone).delete()
    speaker_id, _ = gallery.best_match(unit(2))
    assert speaker_id == str(kept.id) and len(gallery) == 1


def test_the_held_fingerprint_follows_rows_added_and_erased(tenant):
    speakers = [make_speaker(tenant, f"S{i}") for i in range(3)]
    for i, speaker in enumerate(speakers):
        store_voiceprint(speaker, unit(i))
    gallery = tenant_gallery(tenant.id, "m", "v")

    Voiceprint.objects.filter(speaker=speakers[-1]).delete()  # the newest row
    store_voiceprint(make_speaker(tenant, "Later"), unit(7))
    gallery.refresh()

    # In step with the store again, so the next request's check is the cheap one.
    assert gallery._held_fingerprint() == gallery._fingerprint()
    assert len(gallery) == 3


def test_a_refused_row_is_left_out_of_the_duplicate_check(tenant):
    kept, tampered = make_speaker(tenant), make_speaker(tenant, "Tampered")
    store_voiceprint(kept, unit(1))
    store_voiceprint(tampered, unit(2))
    Voiceprint.objects.filter(speaker=tampered).update(vector_sha256="0" * 64)

    gallery = tenant_gallery(tenant.id, "m", "v")

    assert len(gallery) == 1 and gallery.best_match(unit(2))[0] == str(kept.id)


def test_a_process_drops_galleries_it_no_longer_uses(tenant, settings, monkeypatch):
    settings.DUPLICATE_GALLERY_IDLE_S = 60.0
    settings.DUPLICATE_GALLERY_MAX_TENANTS = 2
    store_voiceprint(make_speaker(tenant), unit(1))
    # This process's galleries of earlier tests are not this test's to count.
    monkeypatch.setattr(galleries, "_galleries", {})
    monkeypatch.setattr(galleries, "_last_used", {})
    clock = [1000.0]
    monkeypatch.setattr(galleries.time, "monotonic", lambda: clock[0])
    first = tenant_gallery(tenant.id, "m", "v")
    assert len(first) == 1 and tenant_gallery(tenant.id, "m", "v") is first

    # Idle past the limit: the next enrollment, in any tenant, lets go of the decrypted vectors.
    clock[0] += 61
    tenant_gallery(make_tenant().id, "m", "v")
    assert (tenant.id, "m", "v") not in galleries._galleries
    clock[0] += 1
    again = tenant_gallery(tenant.id, "m", "v")
    assert again is not first and len(again) == 1

    # Beyond the bound, the least recently used goes first.
    newest = make_tenant()
    tenant_gallery(newest.id, "m", "v")
    assert set(galleries._galleries) == {(tenant.id, "m", "v"), (newest.id, "m", "v")}


@pytest.fixture
def opened(monkeypatch):
    """The speakers whose voiceprints the store opened (each key unwrap), in order."""
    calls: list[str] = []
    real = voiceprints.speaker_keys

    def counting(ids):
        ids = list(ids)
        calls.extend(str(i) for i in ids)
        return real(ids)

    monkeypatch.setattr(voiceprints, "speaker_keys", counting)
    return calls


def enroll(api, **fields) -> dict:
    response = api.post(URL, enrollment_form(**fields), format="multipart")
    assert response.status_code == 201, response.content
    return response.json()["data"]


def findings(data: dict) -> set[str]:
    return {f["code"] for f in data["preflight"]["findings"]}


def test_each_voiceprint_is_decrypted_once_for_the_duplicate_check(api, opened, settings):
    settings.PREFLIGHT_DUPLICATE_POLICY = "warn"
    first = enroll(api)
    assert opened == []  # an empty tenant
    second = enroll(api)
    assert opened == [first["id"]] and "duplicate_voice" in findings(second)
    third = enroll(api)
    # The first is not decrypted again: only what is new since the last enrollment.
    assert opened == [first["id"], second["id"]]
    assert "duplicate_voice" in findings(third)


def test_an_erased_speaker_is_no_longer_a_duplicate(api, settings):
    settings.PREFLIGHT_DUPLICATE_POLICY = "warn"
    first = enroll(api)
    second = enroll(api)
    assert "duplicate_voice" in findings(second)  # the tenant's gallery holds the first

    for speaker in (first, second):
        assert api.delete(f"{URL}/{speaker['id']}").status_code == 200

    assert "duplicate_voice" not in findings(enroll(api))
