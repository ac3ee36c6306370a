"""Encryption at rest for credential secrets: Fernet (AES-128-CBC + HMAC-SHA256) from
``cryptography``, with MultiFernet for key rotation.

``WECONNECT_ENCRYPTION_KEYS`` lists the keys: the first encrypts, every one decrypts, so a new
key is put first, ``manage.py reencrypt_credentials`` rewrites every row under it, and the old
key is then removed. Under DEBUG with no keys a development key is derived from SECRET_KEY
(HKDF), so a fresh checkout works; anywhere else, no keys is an error naming the variable the
first time a credential is encrypted or decrypted.
"""

from __future__ import annotations

import base64
import functools
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

KEYS_SETTING = "WECONNECT_ENCRYPTION_KEYS"


class DecryptionFailed(Exception):
    """The stored secret cannot be read with any configured key (a key was removed too soon)."""


def development_key(secret_key: str) -> bytes:
    """A Fernet key derived from SECRET_KEY; used only under DEBUG when no keys are set."""
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"weconnect credentials (DEBUG only)"
    ).derive(secret_key.encode())
    return base64.urlsafe_b64encode(derived)


def configured_keys() -> list[bytes]:
    keys = [k.encode() for k in settings.WECONNECT_ENCRYPTION_KEYS]
    if keys:
        return keys
    if settings.DEBUG:
        return [development_key(settings.SECRET_KEY)]
    raise ImproperlyConfigured(
        f"{KEYS_SETTING} must be set to use credentials (comma-separated Fernet keys; "
        "generate one with: python -c 'from cryptography.fernet import Fernet; "
        "print(Fernet.generate_key().decode())')"
    )


@functools.lru_cache(maxsize=4)
def _multi(keys: tuple[bytes, ...]) -> MultiFernet:
    return MultiFernet([Fernet(k) for k in keys])


def cipher() -> MultiFernet:
    # Keyed on the key list itself, so a settings override (tests, a reload) takes effect.
    return _multi(tuple(configured_keys()))


def encrypt(data: dict[str, Any]) -> str:
    return cipher().encrypt(json.dumps(data, separators=(",", ":")).encode()).decode()


def decrypt(token: str) -> dict[str, Any]:
    try:
        return json.loads(cipher().decrypt(token.encode()))
    except InvalidToken:
        raise DecryptionFailed(
            f"a stored credential cannot be decrypted with any key in {KEYS_SETTING}"
        ) from None


def rotate(token: str) -> str:
    """The same secret encrypted under the first key (MultiFernet.rotate keeps the timestamp)."""
    try:
        return cipher().rotate(token.encode()).decode()
    except InvalidToken:
        raise DecryptionFailed(
            f"a stored credential cannot be decrypted with any key in {KEYS_SETTING}"
        ) from None


def primary_key_encrypts(token: str) -> bool:
    """Whether ``token`` was written with the first key (the one new writes use)."""
    try:
        Fernet(configured_keys()[0]).decrypt(token.encode())
    except InvalidToken:
        return False
    return True
