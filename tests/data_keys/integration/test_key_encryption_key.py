"""Where the key-encryption key comes from, a KMS standing in for it, and its rotation."""

from __future__ import annotations

import base64
import io
import logging
import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError

from data_keys.crypto import field_context, seal, unseal
from data_keys.models import DataKey
from data_keys.selectors import speaker_key, speaker_keys
from data_keys.services import (
    check_key_encryption_key,
    create_data_key,
    destroy_data_key,
    encrypt_for_speaker,
)
from data_keys.wrapping import configured_kek, get_key_wrapper, key_id_of
from tests.factories import make_tenant
from tests.live import ROOT

KEK_A = b"\xaa" * 32
KEK_B = b"\xbb" * 32
KEK_C = b"\xcc" * 32


def text(kek: bytes) -> str:
    return base64.b64encode(kek).decode()


@pytest.fixture
def under_kek(settings):
    """Sets the current KEK (and the retired ones); the wrapper follows the settings."""

    def use(current: bytes, *retired: bytes) -> str:
        settings.DATA_KEY_ENCRYPTION_KEY = text(current)
        settings.DATA_KEY_ENCRYPTION_KEYS_RETIRED = ",".join(text(k) for k in retired)
        return get_key_wrapper().current_key_id

    return use


# --- where the key comes from -------------------------------------------------------------


def test_a_local_run_generates_its_key_once_and_reuses_it(settings, tmp_path):
    settings.LOCAL_RUN = True
    settings.DATA_KEY_ENCRYPTION_KEY = ""
    settings.DATA_KEY_ENCRYPTION_KEY_FILE = tmp_path / "data" / "data-key-encryption-key"
    path = Path(settings.DATA_KEY_ENCRYPTION_KEY_FILE)

    first = get_key_wrapper().current_key_id
    written = path.read_bytes()
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert len(base64.b64decode(written.strip())) == 32
    get_key_wrapper.cache_clear()  # as a new process would
    assert get_key_wrapper().current_key_id == first
    assert path.read_bytes() == written
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_processes_starting_together_generate_one_key(settings, tmp_path):
    settings.LOCAL_RUN = True
    settings.DATA_KEY_ENCRYPTION_KEY = ""
    settings.DATA_KEY_ENCRYPTION_KEY_FILE = tmp_path / "data-key-encryption-key"

    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: configured_kek(), range(16)))

    assert len(set(keys)) == 1
    assert base64.b64decode(Path(settings.DATA_KEY_ENCRYPTION_KEY_FILE).read_bytes()) == keys[0]


def test_production_without_a_key_refuses_and_generates_nothing(settings, tmp_path):
    settings.LOCAL_RUN = False
    settings.DATA_KEY_ENCRYPTION_KEY = ""
    settings.DATA_KEY_ENCRYPTION_KEY_FILE = tmp_path / "absent"

    with pytest.raises(ImproperlyConfigured, match="No key-encryption key"):
        get_key_wrapper()
    assert not (tmp_path / "absent").exists()


def test_a_key_file_serves_production(settings, tmp_path):
    settings.LOCAL_RUN = False
    settings.DATA_KEY_ENCRYPTION_KEY = ""
    settings.DATA_KEY_ENCRYPTION_KEY_FILE = tmp_path / "kek"
    (tmp_path / "kek").write_text(text(KEK_A) + "\n")

    assert get_key_wrapper().current_key_id == key_id_of(KEK_A)


def settings_process(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SCAIECHO_ENV", "DJANGO_SECRET_KEY", "DATA_KEY_"))
    }
    clean.update(DJANGO_SETTINGS_MODULE="config.settings", DJANGO_SECRET_KEY="k" * 40)
    return subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.SCAIECHO_ENV)"],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_refuses_to_start_without_a_key_encryption_key():
    refused = settings_process(SCAIECHO_ENV="production")
    assert refused.returncode != 0
    assert "ImproperlyConfigured" in refused.stderr
    assert "DATA_KEY_ENCRYPTION_KEY" in refused.stderr and "SCAIECHO_ENV=local" in refused.stderr

    for env in (
        {"DATA_KEY_ENCRYPTION_KEY": text(KEK_A)},
        {"DATA_KEY_ENCRYPTION_KEY_FILE": "/run/secrets/kek"},
        {"DATA_KEY_WRAPPER": "example.kms.Wrapper"},
    ):
        started = settings_process(SCAIECHO_ENV="production", **env)
        assert started.returncode == 0, (env, started.stderr)
    # A local run needs none: it generates one on first use.
    assert settings_process(SCAIECHO_ENV="local").returncode == 0


# --- a KMS in place of the local key ----------------------------------------------------------


class FakeKms:
    """Stands in for a KMS client: the key never leaves it, only its id is stored."""

    calls: list[str] = []
    _master = AESGCM(b"\x42" * 32)

    @property
    def current_key_id(self) -> str:
        return "kms:arn:aws:kms:eu-west-1:000000000000:key/test"

    def knows(self, key_id: str) -> bool:
        return key_id == self.current_key_id

    def wrap(self, data_key: bytes, *, speaker_id: uuid.UUID) -> bytes:
        self.calls.append(f"wrap {speaker_id}")
        return seal(self._master, data_key, str(speaker_id).encode())

    def unwrap(self, wrapped: bytes, *, key_id: str, speaker_id: uuid.UUID) -> bytes:
        self.calls.append(f"unwrap {speaker_id}")
        return unseal(self._master, wrapped, str(speaker_id).encode())


@pytest.mark.django_db
def test_a_kms_wrapper_named_in_the_settings_wraps_and_unwraps(settings):
    settings.DATA_KEY_WRAPPER = f"{__name__}.FakeKms"
    FakeKms.calls.clear()
    speaker_id = uuid.uuid4()

    created = create_data_key(speaker_id=speaker_id, tenant_id=make_tenant().id)
    row = DataKey.objects.get(speaker_id=speaker_id)

    assert row.wrapping_key_id == FakeKms().current_key_id
    assert created.key not in bytes(row.wrapped_key)
    assert speaker_key(speaker_id) == created
    assert FakeKms.calls == [f"wrap {speaker_id}", f"unwrap {speaker_id}"]


# --- the data keys themselves ---------------------------------------------------------------


@pytest.mark.django_db
def test_destroying_a_key_makes_its_fields_unreadable(under_kek):
    under_kek(KEK_A)
    tenant = make_tenant()
    kept, erased = uuid.uuid4(), uuid.uuid4()
    for speaker_id in (kept, erased):
        create_data_key(speaker_id=speaker_id, tenant_id=tenant.id)
    context = field_context("t", "row", "name")
    ciphertext = encrypt_for_speaker(erased, context, b"Alice")

    assert destroy_data_key(erased) is True
    assert destroy_data_key(erased) is False
    assert speaker_key(erased) is None
    assert set(speaker_keys([kept, erased])) == {kept}
    assert ciphertext  # the ciphertext is still there, and nothing can read it


@pytest.mark.django_db
def test_the_start_check_names_data_keys_no_configured_key_unwraps(under_kek, caplog):
    under_kek(KEK_A)
    create_data_key(speaker_id=uuid.uuid4(), tenant_id=make_tenant().id)
    under_kek(KEK_B)

    with caplog.at_level(logging.ERROR, logger="data_keys.services"):
        check_key_encryption_key()
    assert key_id_of(KEK_A) in caplog.text and "DATA_KEY_ENCRYPTION_KEYS_RETIRED" in caplog.text


# --- rotation -----------------------------------------------------------------------------


def rotate(**options) -> str:
    out = io.StringIO()
    call_command("rotate_data_key_encryption_key", stdout=out, **options)
    return out.getvalue()


@pytest.mark.django_db
def test_rotation_rewraps_every_key_in_batches_and_is_idempotent(under_kek):
    old_id = under_kek(KEK_A)
    tenant = make_tenant()
    speakers = [uuid.uuid4() for _ in range(7)]
    context = field_context("t", "row", "name")
    ciphertexts = {}
    for speaker_id in speakers:
        key = create_data_key(speaker_id=speaker_id, tenant_id=tenant.id)
        ciphertexts[speaker_id] = key.encrypt(context, speaker_id.bytes)
    wrapped_before = dict(DataKey.objects.values_list("speaker_id", "wrapped_key"))

    new_id = under_kek(KEK_B, KEK_A)
    output = rotate(batch_size=3)

    assert output.count("re-wrapped a batch of") == 3  # 3 + 3 + 1
    assert f"current key-encryption key {new_id}: 7 data keys re-wrapped" in output
    rows = dict(DataKey.objects.values_list("speaker_id", "wrapping_key_id"))
    assert set(rows.values()) == {new_id} and old_id != new_id
    assert all(
        bytes(wrapped) != bytes(wrapped_before[pk])
        for pk, wrapped in DataKey.objects.values_list("speaker_id", "wrapped_key")
    )
    # The old KEK can go: every data key, and what it encrypted, reads under the new one.
    under_kek(KEK_B)
    for speaker_id in speakers:
        assert speaker_key(speaker_id).decrypt(context, ciphertexts[speaker_id]) == (
            speaker_id.bytes
        )

    again = rotate()
    assert "0 data keys re-wrapped, 7 already under it" in again


@pytest.mark.django_db
def test_rotation_names_keys_it_cannot_unwrap_and_rewraps_the_others(under_kek):
    tenant = make_tenant()
    under_kek(KEK_C)
    lost = uuid.uuid4()
    create_data_key(speaker_id=lost, tenant_id=tenant.id)
    under_kek(KEK_A)
    readable = uuid.uuid4()
    create_data_key(speaker_id=readable, tenant_id=tenant.id)

    new_id = under_kek(KEK_B, KEK_A)
    with pytest.raises(CommandError, match=f"1 under {key_id_of(KEK_C)}"):
        rotate()

    assert DataKey.objects.get(speaker_id=readable).wrapping_key_id == new_id
    assert DataKey.objects.get(speaker_id=lost).wrapping_key_id == key_id_of(KEK_C)


@pytest.mark.django_db
def test_rotation_refuses_a_batch_size_below_one():
    with pytest.raises(CommandError, match="batch-size"):
        rotate(batch_size=0)
