"""Factories for real tenants, keys and principals, exposed as fixtures."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import numpy as np
import pytest
from rest_framework.test import APIClient

from common.blobs import get_blob_store, sha256_hex
from data_keys.selectors import speaker_key
from data_keys.services import create_data_key
from enrollment.models import EnrollmentStatus, Speaker
from enrollment.voiceprints import add_voiceprint, load_voiceprint
from operations.services import create_api_key
from tenancy.auth import ApiPrincipal
from tenancy.models import ALL_SCOPES, ApiKey, Tenant
from tenancy.services import create_tenant
from tests import audio

SPEAKERS_URL = "/v1/modules/scaiecho/speakers"


def make_tenant(slug: str | None = None) -> Tenant:
    return create_tenant(slug or f"t-{uuid.uuid4().hex[:10]}")


def make_key(tenant: Tenant, scopes: list[str] | None = None) -> tuple[ApiKey, str]:
    return create_api_key(tenant, scopes or list(ALL_SCOPES))


def make_principal(tenant: Tenant | None = None, scopes: list[str] | None = None) -> ApiPrincipal:
    key, _ = make_key(tenant or make_tenant(), scopes)
    return ApiPrincipal(api_key=key, tenant=key.tenant, scopes=frozenset(key.scopes))


def client_for(raw_key: str | None) -> APIClient:
    client = APIClient()
    if raw_key:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


def make_speaker(tenant: Tenant, name: str = "Speaker") -> Speaker:
    """A ready speaker row with its data key (no recordings stored), for tests about access
    rather than audio."""
    speaker = Speaker.objects.create(
        tenant=tenant,
        display_name=name,
        language_primary="en",
        enrollment_status=EnrollmentStatus.READY,
        reference_blob_key=f"speakers/{uuid.uuid4()}",
        reference_sha256="0" * 64,
        reference_size_bytes=1,
        reference_duration_s=5.0,
        reference_speech_s=4.0,
        embedding_model_id="m",
        embedding_model_version="v",
    )
    create_data_key(speaker_id=speaker.id, tenant_id=tenant.id)
    return speaker


def speaker_with_reference(
    tenant: Tenant, name: str = "Speaker", ranges: Sequence[tuple[float, float]] = audio.SPEAKER_A
) -> Speaker:
    """A ready speaker whose reference (a clip of the pyannote sample) is in the blob store, and
    no stored voiceprint: what a node or ``reembed`` computes one from."""
    speaker = make_speaker(tenant, name)
    data = audio.encode(audio.clip(list(ranges)))
    get_blob_store().put(speaker.reference_blob_key, data)
    Speaker.objects.filter(id=speaker.id).update(reference_sha256=sha256_hex(data))
    speaker.refresh_from_db()
    return speaker


def store_voiceprint(speaker: Speaker, vector: Sequence[float] | np.ndarray) -> Speaker:
    """Stores ``vector`` as the speaker's voiceprint of its own model in the voiceprint store,
    as enrollment stores it (the key is made if the speaker has none)."""
    key = speaker_key(speaker.id) or create_data_key(
        speaker_id=speaker.id, tenant_id=speaker.tenant_id
    )
    add_voiceprint(
        key,
        tenant_id=speaker.tenant_id,
        model_id=speaker.embedding_model_id,
        model_version=speaker.embedding_model_version,
        vector=vector,
        computed_by="preflight",
    )
    return speaker


def stored_voiceprint(speaker_id: object) -> np.ndarray | None:
    """The speaker's voiceprint of its own model, read from the voiceprint store."""
    speaker = Speaker.objects.get(id=speaker_id)
    return load_voiceprint(speaker.id, speaker.embedding_model_id, speaker.embedding_model_version)


def enrollment_form(**overrides: object) -> dict[str, object]:
    """A valid multipart enrollment of speaker A from the pyannote sample."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    form: dict[str, object] = {
        "display_name": "Alice Example",
        "language_primary": "en",
        "description": "Customer success lead",
        "consent_user_full_name": "Alice Example",
        "consent_stated_purpose": "Meeting transcription diarization for the support team",
        "consent_text": "I, Alice Example, consent to enrolling my voice for diarization.",
        "reference": SimpleUploadedFile(
            "alice-reference.wav", audio.encode(audio.clip(audio.SPEAKER_A)), "audio/wav"
        ),
        "consent": SimpleUploadedFile(
            "alice-consent.wav", audio.encode(audio.clip(audio.SPEAKER_A_CONSENT)), "audio/wav"
        ),
    }
    form.update(overrides)
    return form


def enroll(api: APIClient) -> dict:
    """Speaker A enrolled through the API (a 201 asserted); the response's data."""
    response = api.post(SPEAKERS_URL, enrollment_form(), format="multipart")
    assert response.status_code == 201, response.content
    return response.json()["data"]


def warm_view(api: APIClient, speaker_id: str) -> dict:
    """The speaker's warm view: which nodes hold it."""
    return api.get(f"{SPEAKERS_URL}/{speaker_id}/warm").json()["data"]


def upload(name: str, data: bytes, content_type: str = "application/octet-stream"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type)


@pytest.fixture
def tenant(db) -> Tenant:
    return make_tenant()


@pytest.fixture
def admin_key(tenant) -> str:
    return make_key(tenant)[1]


@pytest.fixture
def api(admin_key) -> APIClient:
    return client_for(admin_key)
