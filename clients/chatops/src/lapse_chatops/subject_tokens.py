"""The bearer tokens chatops presents on the person's behalf: signed with chatops' own key,
under its own issuer, saying who the person is and nothing else.

No `roles` and no `groups` claim: what a chat user may do is decided by the services from
their own identity sources, so neither this process nor whoever edits its directory can make
anyone an admin. The services are expected to trust this issuer for the subject only
(LAPSE_AUTH_SUBJECT_ONLY_ISSUERS on their side).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# A token is minted per gRPC call and thrown away after it; a stolen one is worth little.
MAX_TOKEN_TTL_SECONDS = 5 * 60


class SubjectTokenMinter:
    def __init__(
        self,
        *,
        key_file: Path,
        issuer: str,
        audience: str,
        ttl_seconds: int,
        key_id: str = "",
        now: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < ttl_seconds <= MAX_TOKEN_TTL_SECONDS:
            raise ValueError(
                f"token lifetime {ttl_seconds}s: must be 1 to {MAX_TOKEN_TTL_SECONDS} seconds"
            )
        if not issuer.strip():
            raise ValueError("the token issuer must not be empty")
        self._key = _load_ed25519(key_file)
        self._issuer = issuer
        self._audience = audience
        self._ttl = ttl_seconds
        self._headers = {"kid": key_id} if key_id else None
        self._now = now

    def token_for(self, subject: str) -> str:
        if not subject:
            raise ValueError("a token needs a subject")
        issued = int(self._now())
        claims = {
            "sub": subject,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": issued,
            "nbf": issued,
            "exp": issued + self._ttl,
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(claims, self._key, algorithm="EdDSA", headers=self._headers)


def _load_ed25519(key_file: Path) -> Ed25519PrivateKey:
    try:
        pem = key_file.read_bytes()
    except OSError as error:
        raise ValueError(
            f"cannot read the chatops token key {key_file}: {error.strerror or error} "
            "(in dev, `python -m lapse_common.dev_keys .lapse/keys` creates chatops-token.key; "
            "in production give chatops an Ed25519 key of its own and the services its "
            "public key)"
        ) from error
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"the chatops token key {key_file} is not an unencrypted PEM private key"
        ) from error
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"the chatops token key {key_file} must be Ed25519 (EdDSA tokens)")
    return key
