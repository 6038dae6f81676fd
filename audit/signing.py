"""The Ed25519 key that signs the audit trail's checkpoints; it never enters the database.

The orchestrator signs with ``AUDIT_SIGNING_KEY`` (or the key in ``AUDIT_SIGNING_KEY_FILE``);
verifiers need only the public half, ``AUDIT_VERIFY_KEY`` (derived from the signing key when
that is at hand). Local runs generate the key file on first start (``ensure_signing_key``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError

logger = logging.getLogger(__name__)

RAW_KEY_BYTES = 32


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key, so that a checkpoint names the key that signed it."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _private_key(text: str, origin: str) -> Ed25519PrivateKey:
    """A PEM (PKCS#8) private key, or base64 of its 32 raw bytes or of its DER form."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            data = base64.b64decode(text, validate=True)
            if len(data) == RAW_KEY_BYTES:
                key = Ed25519PrivateKey.from_private_bytes(data)
            else:
                key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ImproperlyConfigured(f"{origin} is not a readable private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ImproperlyConfigured(f"{origin} is not an Ed25519 key")
    return key


def _public_key(text: str, origin: str) -> Ed25519PublicKey:
    """A PEM public key, or base64 of its 32 raw bytes or of its DER form."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            data = base64.b64decode(text, validate=True)
            if len(data) == RAW_KEY_BYTES:
                key = Ed25519PublicKey.from_public_bytes(data)
            else:
                key = serialization.load_der_public_key(data)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ImproperlyConfigured(f"{origin} is not a readable public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ImproperlyConfigured(f"{origin} is not an Ed25519 key")
    return key


def _key_file() -> Path:
    return Path(settings.AUDIT_SIGNING_KEY_FILE)


def signing_key() -> Ed25519PrivateKey | None:
    """The configured signing key, or None where this process has none."""
    if settings.AUDIT_SIGNING_KEY:
        return _private_key(settings.AUDIT_SIGNING_KEY, "AUDIT_SIGNING_KEY")
    path = _key_file()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ImproperlyConfigured(f"cannot read AUDIT_SIGNING_KEY_FILE {path}: {exc}") from exc
    return _private_key(text, f"AUDIT_SIGNING_KEY_FILE {path}")


def verify_keys() -> dict[str, Ed25519PublicKey]:
    """Every key a checkpoint may be signed with, by key id: ``AUDIT_VERIFY_KEY`` (several,
    comma-separated, while a rotated key's checkpoints are still the latest) and the public half
    of the signing key."""
    keys = [
        _public_key(text, "AUDIT_VERIFY_KEY")
        for text in settings.AUDIT_VERIFY_KEY.split(",")
        if text.strip()
    ]
    private = signing_key()
    if private is not None:
        keys.append(private.public_key())
    return {key_id(key): key for key in keys}


def public_key_text(key: Ed25519PublicKey) -> str:
    """What to give verifiers as ``AUDIT_VERIFY_KEY``: base64 of the raw public key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def ensure_signing_key() -> None:
    """Called by the launcher as the service starts: a configured key must load; a local run
    without one gets a new key in ``AUDIT_SIGNING_KEY_FILE``; anywhere else the service refuses
    to start (CommandError: a message, no traceback)."""
    try:
        if signing_key() is not None:
            verify_keys()  # a malformed AUDIT_VERIFY_KEY stops the start, not the first verify
            return
    except ImproperlyConfigured as exc:
        raise CommandError(str(exc)) from exc
    if not settings.LOCAL_RUN:
        # A key made up here would differ per machine and vanish with it: every checkpoint it
        # signed would then read as forged.
        raise CommandError(
            "No audit signing key: set AUDIT_SIGNING_KEY or AUDIT_SIGNING_KEY_FILE (an Ed25519 "
            "private key, PEM or base64), and AUDIT_VERIFY_KEY on processes that only verify; "
            "SCAIECHO_ENV=local generates one into the data directory."
        )
    path = _key_file()
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created owner-only and never overwritten: a second launcher keeps the first one's key.
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    logger.warning(
        "Generated an audit signing key at %s (a local run); AUDIT_VERIFY_KEY for it: %s",
        path,
        public_key_text(key.public_key()),
    )
