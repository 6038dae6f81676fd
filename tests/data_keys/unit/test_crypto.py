"""Field encryption under a speaker's data key, and the wrapping of that key by the KEK."""

from __future__ import annotations

import base64
import uuid

import pytest
from django.core.exceptions import ImproperlyConfigured

from data_keys.crypto import (
    FORMAT_VERSION,
    CiphertextRejected,
    SpeakerKey,
    field_context,
    new_data_key,
)
from data_keys.wrapping import (
    LocalKeyWrapper,
    UnknownWrappingKey,
    get_key_wrapper,
    key_id_of,
    new_wrapped_data_key,
    unwrap_data_key,
)


def kek_text(kek: bytes) -> str:
    return base64.b64encode(kek).decode()


@pytest.fixture
def key() -> SpeakerKey:
    return SpeakerKey(uuid.uuid4(), new_data_key())


@pytest.fixture
def kek(settings) -> bytes:
    kek = b"\x01" * 32
    settings.DATA_KEY_ENCRYPTION_KEY = kek_text(kek)
    settings.DATA_KEY_ENCRYPTION_KEYS_RETIRED = ""
    return kek


def test_a_field_round_trips_and_its_ciphertext_holds_no_plaintext(key):
    context = field_context("consent_consentrecord", uuid.uuid4(), "consent_user_full_name")
    ciphertext = key.encrypt_text(context, "Alice Example")

    assert b"Alice" not in ciphertext
    assert ciphertext[:1] == FORMAT_VERSION
    assert key.decrypt_text(context, ciphertext) == "Alice Example"
    # A fresh nonce each time: equal names do not give equal ciphertexts.
    assert key.encrypt_text(context, "Alice Example") != ciphertext


def test_a_ciphertext_moved_to_another_row_or_field_does_not_decrypt(key):
    row = uuid.uuid4()
    ciphertext = key.encrypt_text(field_context("t", row, "full_name"), "Alice")

    with pytest.raises(CiphertextRejected):
        key.decrypt(field_context("t", uuid.uuid4(), "full_name"), ciphertext)
    with pytest.raises(CiphertextRejected):
        key.decrypt(field_context("t", row, "consent_text"), ciphertext)


def test_a_ciphertext_moved_to_another_speaker_does_not_decrypt_even_under_the_same_key(key):
    context = field_context("t", "row", "full_name")
    ciphertext = key.encrypt_text(context, "Alice")
    same_bytes_other_speaker = SpeakerKey(uuid.uuid4(), key.key)

    with pytest.raises(CiphertextRejected):
        same_bytes_other_speaker.decrypt(context, ciphertext)
    with pytest.raises(CiphertextRejected):
        SpeakerKey(key.speaker_id, new_data_key()).decrypt(context, ciphertext)


@pytest.mark.parametrize("damage", ["flip-a-bit", "truncate", "unknown-version"])
def test_an_altered_ciphertext_is_refused(key, damage):
    context = field_context("t", "row", "f")
    data = bytearray(key.encrypt_text(context, "Alice"))
    if damage == "flip-a-bit":
        data[-1] ^= 1
    elif damage == "truncate":
        data = data[:20]
    else:
        data[0] = 2
    with pytest.raises(CiphertextRejected):
        key.decrypt(context, bytes(data))


def test_the_key_is_never_in_its_repr(key):
    assert key.key.hex() not in repr(key) and str(key.key) not in repr(key)


def test_a_wrapped_key_unwraps_only_for_its_speaker(kek):
    speaker_id = uuid.uuid4()
    key, wrapped, key_id = new_wrapped_data_key(speaker_id)

    assert key.key not in wrapped
    assert key_id == key_id_of(kek) and kek.hex() not in key_id
    assert unwrap_data_key(speaker_id, wrapped, key_id).key == key.key
    with pytest.raises(CiphertextRejected):
        unwrap_data_key(uuid.uuid4(), wrapped, key_id)


def test_a_retired_kek_still_unwraps_and_an_unknown_one_is_named(settings, kek):
    speaker_id = uuid.uuid4()
    key, wrapped, old_id = new_wrapped_data_key(speaker_id)

    settings.DATA_KEY_ENCRYPTION_KEY = kek_text(b"\x02" * 32)
    settings.DATA_KEY_ENCRYPTION_KEYS_RETIRED = kek_text(kek)
    assert get_key_wrapper().current_key_id != old_id
    assert unwrap_data_key(speaker_id, wrapped, old_id).key == key.key

    settings.DATA_KEY_ENCRYPTION_KEYS_RETIRED = ""
    with pytest.raises(UnknownWrappingKey, match=old_id):
        unwrap_data_key(speaker_id, wrapped, old_id)


@pytest.mark.parametrize(
    "setting, value",
    [
        ("DATA_KEY_ENCRYPTION_KEY", "not base64!"),
        ("DATA_KEY_ENCRYPTION_KEY", kek_text(b"short")),
        ("DATA_KEY_ENCRYPTION_KEYS_RETIRED", kek_text(b"\x03" * 31)),
    ],
    ids=["not-base64", "too-short", "retired-too-short"],
)
def test_a_malformed_kek_is_refused_by_name(settings, kek, setting, value):
    setattr(settings, setting, value)
    with pytest.raises(ImproperlyConfigured, match=setting):
        LocalKeyWrapper()
