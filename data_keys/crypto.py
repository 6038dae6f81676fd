"""AES-256-GCM under a speaker's data key: the format of every field it encrypts.

A ciphertext is ``version (1 byte) | nonce (12 bytes) | ciphertext and tag``. Its associated
data names the speaker and the field (``context``: a table, a row and a column), so that a
ciphertext copied to another speaker, row or field does not decrypt.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DATA_KEY_BYTES = 32
NONCE_BYTES = 12
FORMAT_VERSION = b"\x01"


class CiphertextRejected(Exception):
    """A ciphertext that does not decrypt under its key for its context: moved from another
    speaker, row or field, altered, or wrapped by another key."""


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=DATA_KEY_BYTES * 8)


def field_context(table: str, row_id: object, column: str) -> str:
    """The context of one field of one row: what its ciphertext is bound to."""
    return f"{table}/{row_id}/{column}"


def seal(key: bytes | AESGCM, plaintext: bytes, associated_data: bytes) -> bytes:
    cipher = key if isinstance(key, AESGCM) else AESGCM(key)
    nonce = os.urandom(NONCE_BYTES)
    return FORMAT_VERSION + nonce + cipher.encrypt(nonce, plaintext, associated_data)


def unseal(key: bytes | AESGCM, ciphertext: bytes, associated_data: bytes) -> bytes:
    cipher = key if isinstance(key, AESGCM) else AESGCM(key)
    data = bytes(ciphertext)
    if data[:1] != FORMAT_VERSION or len(data) < 1 + NONCE_BYTES + 16:
        raise CiphertextRejected("not a ciphertext of this format")
    nonce, body = data[1 : 1 + NONCE_BYTES], data[1 + NONCE_BYTES :]
    try:
        return cipher.decrypt(nonce, body, associated_data)
    except InvalidTag as exc:
        raise CiphertextRejected("the ciphertext does not belong to this key and field") from exc


@dataclass(frozen=True)
class SpeakerKey:
    """A speaker's unwrapped data key, held only in memory while it is used."""

    speaker_id: uuid.UUID
    key: bytes = field(repr=False)
    _cipher: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.key) != DATA_KEY_BYTES:
            raise ValueError("a data key is 32 bytes")
        object.__setattr__(self, "_cipher", AESGCM(self.key))

    def _associated_data(self, context: str) -> bytes:
        return f"scaiecho/field/v1|{self.speaker_id}|{context}".encode()

    def encrypt(self, context: str, plaintext: bytes) -> bytes:
        return seal(self._cipher, plaintext, self._associated_data(context))

    def decrypt(self, context: str, ciphertext: bytes) -> bytes:
        """Raises :class:`CiphertextRejected` for a ciphertext of another speaker or field."""
        return unseal(self._cipher, ciphertext, self._associated_data(context))

    def encrypt_text(self, context: str, text: str) -> bytes:
        return self.encrypt(context, text.encode())

    def decrypt_text(self, context: str, ciphertext: bytes) -> str:
        return self.decrypt(context, ciphertext).decode()
