"""``manage.py reembed``: a model's missing voiceprints computed from the references, oldest
first, resumable, and refused for a model, version or tenant it cannot serve."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import CommandError, call_command

from common.blobs import get_blob_store
from enrollment.models import EnrollmentStatus, Speaker, Voiceprint
from tests.factories import make_tenant, speaker_with_reference
from voice.engines import load_engine

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def engine():
    return load_engine("resemblyzer")


def reembed(*args: str) -> str:
    out = io.StringIO()
    call_command("reembed", "--model", "resemblyzer", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def stored_by_reembed(engine) -> list[str]:
    return [
        str(s)
        for s in Voiceprint.objects.filter(
            model_id=engine.model_id, model_version=engine.model_version, computed_by="reembed"
        )
        .order_by("created_at")
        .values_list("speaker_id", flat=True)
    ]


def test_computes_the_missing_voiceprints_oldest_first_and_then_has_nothing_to_do(engine):
    tenant = make_tenant()
    oldest, newest = speaker_with_reference(tenant, "Old"), speaker_with_reference(tenant, "New")
    held = speaker_with_reference(tenant, "Held")
    Speaker.objects.filter(id=held.id).update(enrollment_status=EnrollmentStatus.NEEDS_REVIEW)

    output = reembed("--batch-size", "1")

    assert f"model {engine.model_id} version {engine.model_version}" in output
    assert re.findall(r"(\d+)/2 speakers: (\d+) computed", output) == [("1", "1"), ("2", "2")]
    assert stored_by_reembed(engine) == [str(oldest.id), str(newest.id)]  # never the held one
    assert reembed().splitlines()[-1] == "no voiceprint of this model is missing"
    assert len(stored_by_reembed(engine)) == 2


def test_a_reference_that_cannot_give_one_is_reported_and_the_next_run_resumes_it(engine):
    tenant = make_tenant()
    gone, fine = speaker_with_reference(tenant, "Gone"), speaker_with_reference(tenant, "Fine")
    data = get_blob_store().get(gone.reference_blob_key)
    get_blob_store().delete_all_versions(gone.reference_blob_key)

    err = io.StringIO()
    with pytest.raises(CommandError, match="1 voiceprints could not be computed"):
        call_command("reembed", "--model", "resemblyzer", stdout=io.StringIO(), stderr=err)
    assert f"speaker {gone.id}: reference_missing" in err.getvalue()
    assert stored_by_reembed(engine) == [str(fine.id)]

    get_blob_store().put(gone.reference_blob_key, data)
    assert "1/1 speakers: 1 computed, 0 failed" in reembed()
    assert sorted(stored_by_reembed(engine)) == sorted([str(gone.id), str(fine.id)])


def test_only_the_named_tenants_speakers(engine):
    mine, theirs = make_tenant(), make_tenant()
    speaker = speaker_with_reference(mine)
    speaker_with_reference(theirs)

    assert "1/1 speakers: 1 computed" in reembed("--tenant", mine.slug)
    assert stored_by_reembed(engine) == [str(speaker.id)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--version", "not-the-loaded-one"], "not not-the-loaded-one"),
        (["--tenant", "no-such-tenant"], "no tenant no-such-tenant"),
        (["--batch-size", "0"], "batch-size"),
    ],
)
def test_refuses_a_version_tenant_or_batch_it_cannot_serve(args, message):
    speaker_with_reference(make_tenant())
    with pytest.raises(CommandError, match=message):
        reembed(*args)
    assert not Voiceprint.objects.filter(computed_by="reembed").exists()


def test_refuses_a_model_that_does_not_load(tmp_path):
    broken = tmp_path / "model.bin"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(CommandError, match="unknown or unavailable model"):
        call_command("reembed", "--model", str(broken), stdout=io.StringIO())
