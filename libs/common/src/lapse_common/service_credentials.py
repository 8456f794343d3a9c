"""Service-to-service credentials: each Lapse service that calls another signs its own
short-lived tokens with its own key, for that one callee.

A person's token is never forwarded: the callee then knows which service calls (not just
"somebody with a valid token"), an internal method can refuse everyone else, and a leaked
service token is good for one callee for a few minutes. What the callee needs to know of the
person the call is made for travels in the request's fields, filled by the calling service
from the identity it verified.

Claims: `iss` = `sub` = `service:<name>`, `lapse_service` = `<name>`, `aud` =
`lapse-<callee>`, lifetime at most MAX_SERVICE_TOKEN_SECONDS. The callee checks them against
the file `<name>.pub` among its LAPSE_AUTH_SERVICE_PUBLIC_KEY_FILES.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from lapse_common.token_keys import TokenKeyError, VerificationKey, load_pem_public_key

SERVICE_CLAIM = "lapse_service"
SERVICE_SUBJECT_PREFIX = "service:"
MAX_SERVICE_TOKEN_SECONDS = 300


def service_subject(service: str) -> str:
    return f"{SERVICE_SUBJECT_PREFIX}{service}"


def service_audience(service: str) -> str:
    return f"lapse-{service}"


def load_service_keys(paths: list[Path]) -> dict[str, VerificationKey]:
    """`<service>.pub` files: the services allowed to call, by name."""
    keys: dict[str, VerificationKey] = {}
    for path in paths:
        if path.suffix != ".pub" or path.stem in keys:
            raise TokenKeyError(
                f"LAPSE_AUTH_SERVICE_PUBLIC_KEY_FILES: {path}: one <service>.pub per service"
            )
        keys[path.stem] = load_pem_public_key(path)
    return keys


class ServiceCredentials:
    """Tokens this service presents to the services it calls, re-minted before they expire."""

    def __init__(
        self,
        *,
        service: str,
        private_key_pem: bytes,
        lifetime_seconds: int = 120,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < lifetime_seconds <= MAX_SERVICE_TOKEN_SECONDS:
            raise ValueError(f"service token lifetime must be 1..{MAX_SERVICE_TOKEN_SECONDS} s")
        key = serialization.load_pem_private_key(private_key_pem, password=None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError("a service key must be an Ed25519 private key")
        self._key = key
        self._service = service
        self._lifetime = lifetime_seconds
        self._clock = clock
        self._minted: dict[str, tuple[str, float]] = {}

    @classmethod
    def from_key_file(cls, path: Path | None, *, service: str) -> ServiceCredentials:
        if path is None:
            raise ValueError(
                f"LAPSE_AUTH_SERVICE_KEY_FILE is not set: the {service} service calls other "
                "services with its own key (dev: python -m lapse_common.dev_keys makes "
                f"keys/services/{service}.key)"
            )
        try:
            pem = path.read_bytes()
        except OSError as error:
            raise ValueError(f"cannot read LAPSE_AUTH_SERVICE_KEY_FILE {path}: {error}") from error
        return cls(service=service, private_key_pem=pem)

    def token_for(self, callee: str) -> str:
        now = self._clock()
        cached = self._minted.get(callee)
        # Re-minted with a third of the lifetime left, so a call in flight never carries a
        # token that expires on the way.
        if cached is not None and cached[1] - now > self._lifetime / 3:
            return cached[0]
        expires = int(now) + self._lifetime
        claims = {
            "iss": service_subject(self._service),
            "sub": service_subject(self._service),
            SERVICE_CLAIM: self._service,
            "aud": service_audience(callee),
            "iat": int(now),
            "exp": expires,
            "jti": str(uuid.uuid4()),
        }
        token = jwt.encode(claims, self._key, algorithm="EdDSA")
        self._minted[callee] = (token, expires)
        return token

    def metadata_for(self, callee: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token_for(callee)}"),)
