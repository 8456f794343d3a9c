"""Key ids derived from the key itself: the first 16 hex digits of the SHA-256 of an Ed25519
public key's 32 raw bytes.

A label someone types (`platform-1`) can be reused for a different key by mistake; a
derived id cannot, so the signer and the verifier agree which key signed without either
trusting a name, and the same key always has the same id wherever it is configured.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def ed25519_key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]
