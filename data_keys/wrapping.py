"""The key-encryption key (KEK) that wraps every speaker's data key, and where it comes from.

``DATA_KEY_WRAPPER`` names the wrapper by dotted path; the default, :class:`LocalKeyWrapper`,
wraps with AES-256-GCM under ``DATA_KEY_ENCRYPTION_KEY`` (base64 of 32 random bytes), else the
key in ``DATA_KEY_ENCRYPTION_KEY_FILE``, which a local run generates on first use. Keys retired
by a rotation (``DATA_KEY_ENCRYPTION_KEYS_RETIRED``) still unwrap until
``manage.py rotate_data_key_encryption_key`` has re-wrapped every data key under the current
one. A KMS client can stand in: any class with the :class:`KeyWrapper` methods.

A wrapped key is bound to its speaker (associated data), so a wrapped key copied to another
speaker's row does not unwrap.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import logging
import os
import tempfile
import uuid
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from data_keys.crypto import DATA_KEY_BYTES, SpeakerKey, new_data_key, seal, unseal

logger = logging.getLogger(__name__)

KEK_BYTES = 32
NEW_KEY_COMMAND = 'python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"'


class UnknownWrappingKey(Exception):
    """A data key wrapped by a key-encryption key this process does not have."""

    def __init__(self, key_id: str):
        super().__init__(
            f"a data key is wrapped by key-encryption key {key_id}, which is neither "
            "DATA_KEY_ENCRYPTION_KEY nor one of DATA_KEY_ENCRYPTION_KEYS_RETIRED"
        )
        self.key_id = key_id


class KeyWrapper(Protocol):
    """What wraps and unwraps data keys: the local KEK, or a KMS client."""

    @property
    def current_key_id(self) -> str:
        """The id of the key that wraps new data keys (stored next to each wrapped key)."""
        ...

    def knows(self, key_id: str) -> bool:
        """Whether a data key wrapped by ``key_id`` can be unwrapped here."""
        ...

    def wrap(self, data_key: bytes, *, speaker_id: uuid.UUID) -> bytes: ...

    def unwrap(self, wrapped: bytes, *, key_id: str, speaker_id: uuid.UUID) -> bytes:
        """Raises :class:`UnknownWrappingKey`, or ``CiphertextRejected`` for a wrapped key that
        is not this speaker's."""
        ...


def key_id_of(kek: bytes) -> str:
    """A short fingerprint that names a KEK (stored with every key it wraps); not the key."""
    return "local-" + hashlib.sha256(b"scaiecho/kek-id/v1|" + kek).hexdigest()[:16]


def parse_kek(text: str, origin: str) -> bytes:
    try:
        kek = base64.b64decode(text.strip(), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ImproperlyConfigured(f"{origin} is not base64 ({NEW_KEY_COMMAND} makes one)") from exc
    if len(kek) != KEK_BYTES:
        raise ImproperlyConfigured(
            f"{origin} holds {len(kek)} bytes, not {KEK_BYTES} ({NEW_KEY_COMMAND} makes one)"
        )
    return kek


def _generate_key_file(path: Path) -> bytes:
    """Writes a new KEK to ``path`` unless another process got there first; returns the one
    that is there. Written whole, then linked into place: no reader sees half a key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".kek-")  # mode 0600
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(base64.b64encode(os.urandom(KEK_BYTES)).decode() + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
            logger.warning(
                "Generated the key-encryption key of the data keys at %s (a local run): "
                "without it no speaker's personal data can be read.",
                path,
            )
        except FileExistsError:
            pass
    finally:
        os.unlink(temporary)
    return parse_kek(path.read_text(), f"DATA_KEY_ENCRYPTION_KEY_FILE {path}")


def configured_kek() -> bytes:
    """``DATA_KEY_ENCRYPTION_KEY``, else the key file; a local run without either generates the
    file once, anywhere else that is refused."""
    if settings.DATA_KEY_ENCRYPTION_KEY:
        return parse_kek(settings.DATA_KEY_ENCRYPTION_KEY, "DATA_KEY_ENCRYPTION_KEY")
    path = Path(settings.DATA_KEY_ENCRYPTION_KEY_FILE)
    try:
        return parse_kek(path.read_text(), f"DATA_KEY_ENCRYPTION_KEY_FILE {path}")
    except FileNotFoundError:
        if not settings.LOCAL_RUN:
            raise ImproperlyConfigured(
                f"No key-encryption key for the data keys: DATA_KEY_ENCRYPTION_KEY is unset and "
                f"DATA_KEY_ENCRYPTION_KEY_FILE {path} does not exist. Set it to base64 of 32 "
                f"random bytes ({NEW_KEY_COMMAND})."
            ) from None
    except OSError as exc:
        raise ImproperlyConfigured(
            f"cannot read DATA_KEY_ENCRYPTION_KEY_FILE {path}: {exc}"
        ) from exc
    return _generate_key_file(path)


def _wrapped_key_context(speaker_id: uuid.UUID) -> bytes:
    return f"scaiecho/data-key/v1|{speaker_id}".encode()


class LocalKeyWrapper:
    """AES-256-GCM under the configured KEK, and the retired ones for unwrapping."""

    def __init__(self) -> None:
        current = configured_kek()
        retired = [
            parse_kek(text, "DATA_KEY_ENCRYPTION_KEYS_RETIRED")
            for text in settings.DATA_KEY_ENCRYPTION_KEYS_RETIRED.split(",")
            if text.strip()
        ]
        self._ciphers = {key_id_of(kek): AESGCM(kek) for kek in [*retired, current]}
        self._current_key_id = key_id_of(current)

    @property
    def current_key_id(self) -> str:
        return self._current_key_id

    def knows(self, key_id: str) -> bool:
        return key_id in self._ciphers

    def wrap(self, data_key: bytes, *, speaker_id: uuid.UUID) -> bytes:
        cipher = self._ciphers[self._current_key_id]
        return seal(cipher, data_key, _wrapped_key_context(speaker_id))

    def unwrap(self, wrapped: bytes, *, key_id: str, speaker_id: uuid.UUID) -> bytes:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownWrappingKey(key_id)
        return unseal(cipher, wrapped, _wrapped_key_context(speaker_id))


@functools.cache
def get_key_wrapper() -> KeyWrapper:
    """The configured wrapper, made once per process (the data_keys app clears it when a
    DATA_KEY_* setting changes)."""
    wrapper: KeyWrapper = import_string(settings.DATA_KEY_WRAPPER)()
    return wrapper


def new_wrapped_data_key(speaker_id: uuid.UUID) -> tuple[SpeakerKey, bytes, str]:
    """A fresh data key for the speaker: the key, its wrapped form and the wrapping key's id."""
    wrapper = get_key_wrapper()
    raw = new_data_key()
    return (
        SpeakerKey(speaker_id, raw),
        wrapper.wrap(raw, speaker_id=speaker_id),
        wrapper.current_key_id,
    )


def unwrap_data_key(speaker_id: uuid.UUID, wrapped: bytes | memoryview, key_id: str) -> SpeakerKey:
    raw = get_key_wrapper().unwrap(bytes(wrapped), key_id=key_id, speaker_id=speaker_id)
    if len(raw) != DATA_KEY_BYTES:
        raise ImproperlyConfigured(f"the wrapper returned a {len(raw)}-byte data key")
    return SpeakerKey(speaker_id, raw)
