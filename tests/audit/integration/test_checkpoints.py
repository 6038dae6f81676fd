"""Signed checkpoints of the audit trail: made, stored, and what verification finds with them."""

from __future__ import annotations

import base64
import io
import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from audit import checkpoints, signing
from audit.checkpoints import CheckpointRefused, make_checkpoint, read_series
from audit.models import AuditEvent
from audit.services import ANCHOR_CURRENT, ANCHOR_NONE, ANCHOR_OVERDUE, record_event, verify_chain
from common.blobs import BlobStoreError, S3BlobStore, get_blob_store
from console.services import create_console_user
from tests.audit.tampering import cut_tail, rewrite_from, tamper
from tests.factories import client_for, make_key, make_tenant

pytestmark = pytest.mark.django_db

VERIFY = "/v1/modules/scaiecho/audit/verify"
PREFIX = "audit-checkpoints/"


def raw_base64(key: Ed25519PrivateKey) -> str:
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw).decode()


@pytest.fixture
def signing_key(settings, tmp_path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    settings.AUDIT_SIGNING_KEY = raw_base64(key)
    settings.AUDIT_VERIFY_KEY = ""
    settings.AUDIT_SIGNING_KEY_FILE = tmp_path / "no-key-here.pem"
    return key


@pytest.fixture
def auditor(tenant):
    return client_for(make_key(tenant, ["scaiecho:audit"])[1])


def events(count: int, tenant=None) -> list[AuditEvent]:
    return [
        record_event("test.event", actor="system", tenant=tenant, details={"n": n})
        for n in range(count)
    ]


def command() -> tuple[int, str]:
    """verify_audit_trail's exit status and everything it wrote."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("verify_audit_trail", stdout=out, stderr=err)
    except SystemExit as exit_:
        return int(exit_.code or 0), out.getvalue() + err.getvalue()
    return 0, out.getvalue() + err.getvalue()


def stored(name: str) -> dict:
    return json.loads(get_blob_store().get(PREFIX + name))


def put(name: str, document: dict) -> None:
    get_blob_store().put(PREFIX + name, json.dumps(document).encode())


def resign(document: dict, key: Ed25519PrivateKey, **changes) -> dict:
    document["checkpoint"].update(changes)
    signed = json.dumps(document["checkpoint"], sort_keys=True, separators=(",", ":")).encode()
    document["signature"] = base64.b64encode(key.sign(signed)).decode()
    return document


# --- made and stored ---------------------------------------------------------------------


@pytest.mark.parametrize("store", ["s3", "local"])
def test_a_checkpoint_signs_the_head_into_the_blob_store(store, signing_key, settings, tmp_path):
    if store == "local":
        settings.BLOB_STORE = "local"
        settings.BLOB_LOCAL_DIR = tmp_path / "blobs"
        get_blob_store.cache_clear()
    head = events(4)[-1]

    checkpoint = make_checkpoint()

    assert (checkpoint.counter, checkpoint.seq, checkpoint.hash) == (1, head.seq, head.hash)
    if store == "local":
        files = sorted(p.name for p in (tmp_path / "blobs" / "audit-checkpoints").iterdir())
        assert files == ["000000000001.json", "latest.json"]
    else:
        s3 = get_blob_store()
        assert isinstance(s3, S3BlobStore)
        listed = s3.client.list_objects_v2(Bucket=settings.S3_BUCKET, Prefix=PREFIX)
        assert sorted(o["Key"] for o in listed["Contents"]) == [
            f"{PREFIX}000000000001.json",
            f"{PREFIX}latest.json",
        ]
    document = stored("latest.json")
    assert document == stored("000000000001.json")
    payload = document["checkpoint"]
    assert payload["seq"] == head.seq and payload["hash"] == head.hash
    signed = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    signing_key.public_key().verify(base64.b64decode(document["signature"]), signed)
    assert verify_chain().anchor == ANCHOR_CURRENT


def test_each_checkpoint_follows_from_the_one_before(signing_key, settings):
    settings.AUDIT_CHECKPOINT_EVERY_EVENTS = 2
    events(2)
    first = make_checkpoint()
    events(2)
    second = make_checkpoint()
    assert second.counter == 2 and second.previous == first.digest
    assert [c.counter for c in read_series().recent] == [2, 1]


# --- when the maker signs ----------------------------------------------------------------


def test_the_first_checkpoint_waits_for_a_first_event(signing_key):
    assert make_checkpoint() is None
    events(1)
    assert make_checkpoint().counter == 1


def test_a_checkpoint_is_due_after_enough_events(signing_key, settings):
    settings.AUDIT_CHECKPOINT_EVERY_EVENTS = 3
    settings.AUDIT_CHECKPOINT_INTERVAL_S = 3600
    events(1)
    assert make_checkpoint().counter == 1
    events(2)
    assert make_checkpoint() is None
    head = events(1)[-1]
    checkpoint = make_checkpoint()
    assert (checkpoint.counter, checkpoint.seq) == (2, head.seq)


def test_a_checkpoint_is_due_after_the_interval_when_events_came(signing_key, settings):
    settings.AUDIT_CHECKPOINT_EVERY_EVENTS = 1000
    settings.AUDIT_CHECKPOINT_INTERVAL_S = 60
    events(1)
    first = make_checkpoint()
    assert make_checkpoint(first.made_at + timedelta(seconds=120)) is None  # nothing new
    head = events(1)[-1]
    assert make_checkpoint(first.made_at + timedelta(seconds=30)) is None
    checkpoint = make_checkpoint(first.made_at + timedelta(seconds=61))
    assert (checkpoint.counter, checkpoint.seq) == (2, head.seq)


def test_nothing_is_signed_over_a_trail_that_no_longer_holds(signing_key, settings):
    settings.AUDIT_CHECKPOINT_EVERY_EVENTS = 1
    trail = events(3)
    make_checkpoint()
    events(2)
    rewrite_from(trail[1].seq, {"n": "rewritten"})
    with pytest.raises(CheckpointRefused, match=f"event #{trail[-1].seq} no longer holds"):
        make_checkpoint()
    assert stored("latest.json")["checkpoint"]["counter"] == 1


def test_nothing_is_signed_over_a_broken_link_since_the_last_checkpoint(signing_key, settings):
    settings.AUDIT_CHECKPOINT_EVERY_EVENTS = 1
    events(2)
    make_checkpoint()
    later = events(3)
    tamper(("UPDATE audit_auditevent SET actor = 'x' WHERE seq = %s", [later[1].seq]))
    with pytest.raises(CheckpointRefused, match="content does not match"):
        make_checkpoint()


def test_no_signing_key_no_checkpoint(settings, tmp_path):
    settings.AUDIT_SIGNING_KEY = ""
    settings.AUDIT_SIGNING_KEY_FILE = tmp_path / "absent.pem"
    events(1)
    with pytest.raises(ImproperlyConfigured, match="No audit signing key"):
        make_checkpoint()


def test_the_beat_schedule_runs_the_maker_on_the_orchestrator(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["checkpoint-audit-trail"]
    assert entry == {
        "task": "audit.tasks.checkpoint_trail",
        "schedule": settings.AUDIT_CHECKPOINT_CHECK_S,
    }
    assert settings.CELERY_TASK_ROUTES["audit.tasks.checkpoint_trail"]["queue"] == "orchestrator"


def test_the_task_makes_a_due_checkpoint(signing_key):
    from audit.tasks import checkpoint_trail

    events(1)
    assert checkpoint_trail.apply().get() == 1
    assert checkpoint_trail.apply().get() is None


# --- what verification finds -------------------------------------------------------------


def test_a_fresh_trail_without_checkpoints_is_intact(signing_key, auditor):
    events(2)
    assert command()[0] == 0
    body = auditor.get(VERIFY).json()["data"]
    assert body["intact"] is True and body["anchor"] == ANCHOR_NONE


def test_a_cut_tail_is_found_by_the_command_and_the_api(signing_key, auditor, tenant, settings):
    trail = events(3, tenant)
    make_checkpoint()
    cut_tail(trail[0].seq)

    status, output = command()
    assert status == 1
    assert checkpoints.TRUNCATED in output
    assert f"signed event #{trail[-1].seq}, but the trail ends at #{trail[0].seq}" in output
    body = auditor.get(VERIFY).json()["data"]
    assert body == {
        "intact": False,
        "events_checked": AuditEvent.objects.filter(tenant=tenant).count(),
        "first_broken_seq": None,
        "problem": checkpoints.TRUNCATED,
        "break_in_own_events": None,
        "anchor": ANCHOR_CURRENT,
    }
    # The chain that is left links up: without the checkpoints nothing would be found.
    settings.AUDIT_CHECKPOINT_PREFIX = "elsewhere/"
    assert verify_chain().intact


def test_a_rewrite_with_recomputed_hashes_is_found_by_the_command_and_the_api(
    signing_key, auditor, tenant, settings
):
    trail = events(4, tenant)
    make_checkpoint()
    rewrite_from(trail[1].seq, {"n": "rewritten"})

    status, output = command()
    assert status == 1
    assert checkpoints.REWRITTEN in output
    assert f"event #{trail[-1].seq} is not the one checkpoint #1 signed" in output
    body = auditor.get(VERIFY).json()["data"]
    assert body["intact"] is False and body["problem"] == checkpoints.REWRITTEN
    assert body["first_broken_seq"] is None and body["break_in_own_events"] is None
    settings.AUDIT_CHECKPOINT_PREFIX = "elsewhere/"
    assert verify_chain().intact  # every link holds: only the checkpoint tells


def test_a_signed_event_removed_and_relinked_around_is_found(signing_key):
    trail = events(3)
    make_checkpoint()  # signs trail[2]
    later = events(2)
    tamper(("DELETE FROM audit_auditevent WHERE seq = %s", [trail[2].seq]))
    rewrite_from(later[0].seq, later[0].details, prev_hash=trail[1].hash)
    verdict = verify_chain()
    assert not verdict.intact
    assert verdict.problem == checkpoints.SIGNED_EVENT_MISSING
    assert verdict.detail == f"checkpoint #1 signed event #{trail[2].seq}, which is missing"


@pytest.mark.parametrize("forgery", ["altered", "other_key", "garbage"])
def test_a_forged_checkpoint_is_found_by_the_command_and_the_api(
    forgery, signing_key, auditor, tenant
):
    trail = events(3, tenant)
    make_checkpoint()
    document = stored("latest.json")
    if forgery == "altered":  # claims an earlier head, to cover for a cut tail
        document["checkpoint"]["seq"] = trail[0].seq
        document["checkpoint"]["hash"] = trail[0].hash
        expected = checkpoints.BAD_SIGNATURE
    elif forgery == "other_key":
        other = Ed25519PrivateKey.generate()
        resign(document, other, key_id=signing.key_id(other.public_key()))
        expected = checkpoints.UNKNOWN_KEY
    else:
        document = {"checkpoint": "nothing", "signature": "!"}
        expected = checkpoints.CHECKPOINT_MISSING
    put("latest.json", document)

    status, output = command()
    assert status == 1 and expected in output
    body = auditor.get(VERIFY).json()["data"]
    assert body["intact"] is False and body["problem"] == expected
    assert body["break_in_own_events"] is None and body["first_broken_seq"] is None


def test_checkpoints_without_a_key_to_verify_them_are_reported(signing_key, settings, auditor):
    events(1)
    make_checkpoint()
    settings.AUDIT_SIGNING_KEY = ""
    body = auditor.get(VERIFY).json()["data"]
    assert body["intact"] is False and body["problem"] == checkpoints.NO_VERIFY_KEY


def test_a_misconfigured_verify_key_is_reported_not_a_500(signing_key, settings, auditor):
    settings.AUDIT_VERIFY_KEY = "not a key"
    response = auditor.get(VERIFY)
    assert response.status_code == 200
    assert response.json()["data"]["problem"] == checkpoints.KEY_UNREADABLE
    status, output = command()
    assert status == 1 and "AUDIT_VERIFY_KEY is not a readable public key" in output


def test_the_verifying_side_needs_only_the_public_key(signing_key, settings, auditor):
    events(2)
    make_checkpoint()
    settings.AUDIT_SIGNING_KEY = ""
    settings.AUDIT_VERIFY_KEY = signing.public_key_text(signing_key.public_key())
    body = auditor.get(VERIFY).json()["data"]
    assert body["intact"] is True and body["anchor"] == ANCHOR_CURRENT


def test_a_rotated_key_verifies_next_to_the_new_one(signing_key, settings):
    events(1)
    make_checkpoint()
    old_public = signing.public_key_text(signing_key.public_key())
    settings.AUDIT_SIGNING_KEY = raw_base64(Ed25519PrivateKey.generate())
    settings.AUDIT_CHECKPOINT_EVERY_EVENTS = 1
    assert verify_chain().problem == checkpoints.UNKNOWN_KEY
    settings.AUDIT_VERIFY_KEY = old_public
    events(1)
    assert make_checkpoint().counter == 2
    assert verify_chain().intact


def test_a_checkpoint_whose_copy_was_never_written_is_still_found(signing_key, settings):
    settings.AUDIT_CHECKPOINT_EVERY_EVENTS = 1
    events(1)
    make_checkpoint()
    first = stored("latest.json")
    head = events(1)[-1]
    make_checkpoint()
    put("latest.json", first)  # as if the maker died between its two writes
    assert read_series().latest.seq == head.seq
    get_blob_store().delete_all_versions(PREFIX + "latest.json")
    assert read_series().latest.seq == head.seq
    assert verify_chain().intact


def test_a_missing_older_checkpoint_is_reported(signing_key, settings):
    settings.AUDIT_CHECKPOINT_EVERY_EVENTS = 1
    for _ in range(3):
        events(1)
        make_checkpoint()
    get_blob_store().delete_all_versions(PREFIX + "000000000002.json")
    verdict = verify_chain()
    assert verdict.problem == checkpoints.CHECKPOINT_MISSING
    assert verdict.detail == "checkpoint #2 is missing"


def test_a_replaced_series_is_reported(signing_key, settings):
    settings.AUDIT_CHECKPOINT_EVERY_EVENTS = 1
    events(1)
    make_checkpoint()
    events(1)
    make_checkpoint()
    # A validly signed checkpoint #1 of another series (say, of a trail restored elsewhere).
    document = stored("000000000001.json")
    put("000000000001.json", resign(document, signing_key, made_at="2020-01-01T00:00:00+00:00"))
    assert verify_chain().problem == checkpoints.SERIES_BROKEN


def test_a_copy_far_behind_the_series_is_reported(signing_key, settings, monkeypatch):
    monkeypatch.setattr(checkpoints, "FORWARD_PROBES", 2)
    settings.AUDIT_CHECKPOINT_EVERY_EVENTS = 1
    for _ in range(4):
        events(1)
        make_checkpoint()
    put("latest.json", stored("000000000001.json"))
    verdict = verify_chain()
    assert verdict.problem == checkpoints.CHECKPOINT_MISSING
    assert "newer than the latest-checkpoint copy" in verdict.detail


def test_a_first_checkpoint_naming_one_before_it_is_reported(signing_key, settings):
    events(1)
    make_checkpoint()
    document = resign(stored("latest.json"), signing_key, previous="0" * 64)
    put("latest.json", document)
    put("000000000001.json", document)
    assert verify_chain().detail == "checkpoint #1 names a checkpoint before it"


def test_a_checkpoint_stored_under_another_number_is_reported(signing_key, settings):
    settings.AUDIT_CHECKPOINT_EVERY_EVENTS = 1
    for _ in range(2):
        events(1)
        make_checkpoint()
    put("000000000001.json", stored("000000000002.json"))
    verdict = verify_chain()
    assert verdict.problem == checkpoints.SERIES_BROKEN
    assert verdict.detail == "checkpoint #1 says it is #2"


def test_events_left_unanchored_too_long_are_overdue(signing_key, settings, auditor):
    settings.AUDIT_CHECKPOINT_INTERVAL_S = 0
    settings.AUDIT_CHECKPOINT_CHECK_S = 0
    events(1)
    body = auditor.get(VERIFY).json()["data"]
    assert body["intact"] is True and body["anchor"] == ANCHOR_OVERDUE
    status, output = command()
    assert status == 0 and "under no signed checkpoint" in output
    make_checkpoint()
    assert auditor.get(VERIFY).json()["data"]["anchor"] == ANCHOR_CURRENT


def test_an_unreadable_blob_store_is_503_and_exit_2(signing_key, auditor, monkeypatch):
    def fail(self, key):
        raise BlobStoreError("S3 is down")

    monkeypatch.setattr(S3BlobStore, "get", fail)
    response = auditor.get(VERIFY)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "blob_store_unavailable"
    assert "S3 is down" not in response.content.decode()
    with pytest.raises(CommandError) as error:
        call_command("verify_audit_trail", stdout=io.StringIO(), stderr=io.StringIO())
    assert error.value.returncode == 2


# --- per tenant ----------------------------------------------------------------------------


@pytest.fixture
def two_tenants(signing_key):
    a, b = make_tenant(), make_tenant()
    events(3, a)
    events(5, b)
    events(2)  # the system's own
    return a, b


def test_each_tenant_sees_the_count_of_its_own_events(two_tenants):
    for tenant in two_tenants:
        auditor = client_for(make_key(tenant, ["scaiecho:audit"])[1])
        body = auditor.get(VERIFY).json()["data"]
        assert body["intact"] is True
        assert body["events_checked"] == AuditEvent.objects.filter(tenant=tenant).count()
    assert verify_chain().events_checked == AuditEvent.objects.count()


def test_a_break_is_reported_to_every_tenant_located_only_to_its_owner(two_tenants):
    a, b = two_tenants
    auditors = {t: client_for(make_key(t, ["scaiecho:audit"])[1]) for t in (a, b)}
    broken = AuditEvent.objects.filter(tenant=b).order_by("seq")[1]
    tamper(("UPDATE audit_auditevent SET actor = 'someone' WHERE seq = %s", [broken.seq]))

    own = auditors[b].get(VERIFY).json()["data"]
    assert own["intact"] is False and own["break_in_own_events"] is True
    assert own["first_broken_seq"] == broken.seq

    other = auditors[a].get(VERIFY).json()["data"]
    assert other["intact"] is False and other["problem"] == "content does not match its hash"
    assert other["break_in_own_events"] is False and other["first_broken_seq"] is None
    # Counts of its own events only: no other number reaches tenant A.
    numbers = [v for v in other.values() if isinstance(v, int) and not isinstance(v, bool)]
    own_before = AuditEvent.objects.filter(tenant=a, seq__lt=broken.seq).count()
    assert numbers == [own_before]


def test_the_console_page_tells_a_tenant_its_own_numbers(two_tenants):
    a, b = two_tenants
    create_console_user(a, "aud-a", "auditor", "correct horse battery staple")
    console = Client()
    assert console.login(username="aud-a", password="correct horse battery staple")
    count = AuditEvent.objects.filter(tenant=a).count()
    page = console.get("/console/audit/").content.decode()
    assert f"The hash chain verifies: {count} of your events" in page
    assert "no signed checkpoint yet" in page
    make_checkpoint()
    assert "latest signed checkpoint" in console.get("/console/audit/").content.decode()

    broken = AuditEvent.objects.filter(tenant=b).order_by("seq").first()
    tamper(("UPDATE audit_auditevent SET actor = 'someone' WHERE seq = %s", [broken.seq]))
    page = console.get("/console/audit/").content.decode()
    assert "The audit trail is broken, at another tenant's event" in page
    assert str(broken.seq) not in page.split('id="verdict"')[1].split("</p>")[0]


def test_the_console_page_says_when_the_trail_cannot_be_verified(tenant, monkeypatch):
    create_console_user(tenant, "aud", "auditor", "correct horse battery staple")
    console = Client()
    assert console.login(username="aud", password="correct horse battery staple")

    def fail(self, key):
        raise BlobStoreError("S3 is down")

    monkeypatch.setattr(S3BlobStore, "get", fail)
    response = console.get("/console/audit/")
    assert response.status_code == 200
    assert "The trail cannot be verified now" in response.content.decode()


# --- the key -----------------------------------------------------------------------------


def test_a_local_run_generates_its_key_once(settings, tmp_path):
    settings.LOCAL_RUN = True
    settings.AUDIT_SIGNING_KEY = ""
    settings.AUDIT_SIGNING_KEY_FILE = tmp_path / "data" / "audit-signing-key.pem"
    signing.ensure_signing_key()
    path = Path(settings.AUDIT_SIGNING_KEY_FILE)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    first = path.read_bytes()
    signing.ensure_signing_key()
    assert path.read_bytes() == first
    assert isinstance(signing.signing_key(), Ed25519PrivateKey)


def test_production_refuses_to_start_without_a_key(settings, tmp_path):
    settings.LOCAL_RUN = False
    settings.AUDIT_SIGNING_KEY = ""
    settings.AUDIT_SIGNING_KEY_FILE = tmp_path / "absent.pem"
    with pytest.raises(CommandError, match="No audit signing key"):
        signing.ensure_signing_key()
    assert not (tmp_path / "absent.pem").exists()


@pytest.mark.parametrize("form", ["pem", "base64-raw", "base64-der", "file"])
def test_a_configured_key_loads_in_each_form(form, settings, tmp_path):
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    settings.LOCAL_RUN = False
    settings.AUDIT_SIGNING_KEY = {
        "pem": pem.decode(),
        "base64-raw": raw_base64(key),
        "base64-der": base64.b64encode(der).decode(),
        "file": "",
    }[form]
    settings.AUDIT_SIGNING_KEY_FILE = tmp_path / "key.pem"
    settings.AUDIT_SIGNING_KEY_FILE.write_bytes(pem)
    signing.ensure_signing_key()
    assert signing.key_id(signing.signing_key().public_key()) == signing.key_id(key.public_key())


@pytest.mark.parametrize(
    "setting, value",
    [
        ("AUDIT_SIGNING_KEY", "not a key"),
        ("AUDIT_SIGNING_KEY", base64.b64encode(b"short").decode()),
        ("AUDIT_VERIFY_KEY", "not a key"),
    ],
)
def test_a_malformed_key_stops_the_start(setting, value, settings, signing_key):
    setattr(settings, setting, value)
    with pytest.raises(CommandError, match=f"{setting} is not a readable"):
        signing.ensure_signing_key()


def test_a_key_of_another_kind_is_refused(settings):
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1())
    settings.AUDIT_SIGNING_KEY = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with pytest.raises(CommandError, match="not an Ed25519 key"):
        signing.ensure_signing_key()
