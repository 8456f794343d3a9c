"""The public keys tokens are checked against, each pinned to one algorithm.

A key's algorithm follows from the key itself (Ed25519 -> EdDSA, RSA -> RS256, EC P-256 ->
ES256), never from the token: a token whose `alg` does not fit the key it names is refused,
so one key type can never be used as another (the classic RSA-public-key-as-HMAC-secret
confusion) and keys of different types can sit side by side in one set.

Sources: a PEM file, a JWKS file (re-read on change) and a JWKS URL, given directly or found
through OIDC discovery, cached for a while and fetched again when a token names a `kid` the
set does not have (at most once per `min_refetch_seconds`, so a stream of made-up kids cannot
make us hammer the identity provider). Fetches run in a thread with a timeout; a failed fetch
is logged and the keys already known stay in use.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from lapse_common.watched_file import WatchedFile

logger = logging.getLogger(__name__)

# What a JWK of each type may be used with; the first is the default when `alg` is absent.
# Symmetric (`oct`) keys are never accepted: a published HMAC secret signs for anyone.
_ALGORITHMS_BY_KEY_TYPE: dict[tuple[str, str], tuple[str, ...]] = {
    ("OKP", "Ed25519"): ("EdDSA",),
    ("RSA", ""): ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    ("EC", "P-256"): ("ES256",),
    ("EC", "P-384"): ("ES384",),
}
# A JWKS document bigger than this is not a key set.
MAX_JWKS_BYTES = 1024 * 1024


class TokenKeyError(Exception):
    """A key, key file or key set that cannot be used (named in the message)."""


@dataclass(frozen=True)
class VerificationKey:
    key: Any
    algorithm: str
    # None for a PEM key, which has no id: such a key also checks tokens without `kid`.
    kid: str | None = None


def algorithm_for_public_key(key: Any, *, source: str) -> str:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise TokenKeyError(f"{source}: RSA key of {key.key_size} bits (at least 2048 needed)")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise TokenKeyError(f"{source}: unsupported key type (Ed25519, RSA or EC P-256 expected)")


def load_pem_public_key(path: Path) -> VerificationKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as error:
        raise TokenKeyError(f"cannot read public key {path}: {error}") from error
    except ValueError as error:
        raise TokenKeyError(f"{path} is not a PEM public key: {error}") from error
    return VerificationKey(key=key, algorithm=algorithm_for_public_key(key, source=str(path)))


def parse_jwks(text: str, *, source: str) -> tuple[VerificationKey, ...]:
    """The signing keys of a JWKS document. Keys we cannot use safely (unknown type, `alg`
    not fitting the key type, encryption keys) are skipped with a warning, not fatal: an
    identity provider may publish keys for other purposes."""
    try:
        document = json.loads(text)
    except ValueError as error:
        raise TokenKeyError(f"{source}: not JSON: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise TokenKeyError(f"{source}: a JWKS needs a list `keys`")
    keys: list[VerificationKey] = []
    kids: set[str] = set()
    for index, jwk in enumerate(document["keys"]):
        where = f"{source}: keys[{index}]"
        if not isinstance(jwk, dict):
            raise TokenKeyError(f"{where} is not an object")
        if jwk.get("use", "sig") != "sig":
            continue
        kty, curve = str(jwk.get("kty", "")), str(jwk.get("crv", ""))
        allowed = _ALGORITHMS_BY_KEY_TYPE.get((kty, "" if kty == "RSA" else curve))
        if allowed is None:
            logger.warning("%s skipped: unsupported key type kty=%r crv=%r", where, kty, curve)
            continue
        algorithm = str(jwk.get("alg") or allowed[0])
        if algorithm not in allowed:
            logger.warning("%s skipped: alg %r does not fit kty %r", where, algorithm, kty)
            continue
        kid = jwk.get("kid")
        if kid is not None and (not isinstance(kid, str) or not kid):
            raise TokenKeyError(f"{where}: kid must be a non-empty string")
        if kid in kids:
            raise TokenKeyError(f"{where}: kid {kid!r} appears twice")
        try:
            key = jwt.PyJWK(jwk, algorithm=algorithm).key
        except jwt.PyJWTError as error:
            raise TokenKeyError(f"{where}: {error}") from error
        if kid is not None:
            kids.add(kid)
        keys.append(VerificationKey(key=key, algorithm=algorithm, kid=kid))
    return tuple(keys)


class KeySet(Protocol):
    """Where one issuer's keys come from."""

    def current(self) -> tuple[VerificationKey, ...]: ...

    async def refresh_if_stale(self) -> None:
        """Fetch the keys again if the cached ones are older than the cache time."""

    async def refresh(self) -> bool:
        """Fetch the keys again if this source can and may now; True if it did."""
        ...


class StaticKeySet:
    def __init__(self, keys: tuple[VerificationKey, ...]) -> None:
        self._keys = keys

    def current(self) -> tuple[VerificationKey, ...]:
        return self._keys

    async def refresh_if_stale(self) -> None:
        return None

    async def refresh(self) -> bool:
        return False


class JwksFileKeySet:
    """A JWKS document on disk, re-read when it changes (a broken edit keeps the last keys)."""

    def __init__(self, path: Path) -> None:
        self._file = WatchedFile(path, parse=parse_jwks, errors=TokenKeyError, label="JWKS file")

    def current(self) -> tuple[VerificationKey, ...]:
        return self._file.current

    async def refresh_if_stale(self) -> None:
        return None

    async def refresh(self) -> bool:
        return False


class CombinedKeySet:
    def __init__(self, sources: list[KeySet]) -> None:
        self._sources = sources

    def current(self) -> tuple[VerificationKey, ...]:
        return tuple(key for source in self._sources for key in source.current())

    async def refresh_if_stale(self) -> None:
        for source in self._sources:
            await source.refresh_if_stale()

    async def refresh(self) -> bool:
        refreshed = [await source.refresh() for source in self._sources]
        return any(refreshed)


def require_safe_url(url: str, *, setting: str) -> str:
    """https, or http to this machine only: keys fetched in clear could be swapped by anyone
    on the path, and would then sign for everyone."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname:
        host = parts.hostname
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return url
    raise TokenKeyError(f"{setting} {url!r} must be an https:// URL (http:// only to localhost)")


def _fetch_json(url: str, *, timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # scheme checked
        body = response.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise TokenKeyError(f"{url}: answer larger than {MAX_JWKS_BYTES} bytes")
    return json.loads(body)


class RemoteKeySet:
    """Keys from a JWKS URL, or from the `jwks_uri` of the issuer's OIDC discovery document."""

    def __init__(
        self,
        *,
        jwks_url: str = "",
        issuer_url: str = "",
        issuer: str = "",
        cache_seconds: float = 300,
        min_refetch_seconds: float = 30,
        timeout_seconds: float = 5,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not jwks_url and not issuer_url:
            raise TokenKeyError("remote keys need LAPSE_AUTH_JWKS_URL or LAPSE_AUTH_ISSUER_URL")
        self._jwks_url = (
            require_safe_url(jwks_url, setting="LAPSE_AUTH_JWKS_URL") if jwks_url else ""
        )
        self._issuer_url = (
            require_safe_url(issuer_url, setting="LAPSE_AUTH_ISSUER_URL") if issuer_url else ""
        )
        self._issuer = issuer
        self._cache_seconds = cache_seconds
        self._min_refetch_seconds = min_refetch_seconds
        self._timeout = timeout_seconds
        self._monotonic = monotonic
        self._keys: tuple[VerificationKey, ...] = ()
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()

    def current(self) -> tuple[VerificationKey, ...]:
        return self._keys

    @property
    def stale(self) -> bool:
        return self._fetched_at is None or (
            self._monotonic() - self._fetched_at >= self._cache_seconds
        )

    async def refresh(self) -> bool:
        async with self._lock:
            now = self._monotonic()
            last = self._attempted_at
            if last is not None and now - last < self._min_refetch_seconds:
                return False
            self._attempted_at = now
            try:
                # The thread gets its own timeout too (urlopen's), so none lingers for long.
                keys = await asyncio.wait_for(
                    asyncio.to_thread(self._fetch), timeout=self._timeout * 2 + 1
                )
            except Exception as error:  # any failure: keep the old keys
                logger.warning(
                    "cannot fetch the token keys (%s); keeping %d known keys",
                    error or type(error).__name__,
                    len(self._keys),
                )
                return False
            self._keys = keys
            self._fetched_at = self._monotonic()
            logger.info("token keys fetched: %d keys", len(keys))
            return True

    async def refresh_if_stale(self) -> None:
        if self.stale:
            await self.refresh()

    def _fetch(self) -> tuple[VerificationKey, ...]:
        url = self._jwks_url or self._discover()
        document = _fetch_json(url, timeout=self._timeout)
        return parse_jwks(json.dumps(document), source=url)

    def _discover(self) -> str:
        url = self._issuer_url.rstrip("/") + "/.well-known/openid-configuration"
        document = _fetch_json(url, timeout=self._timeout)
        if not isinstance(document, dict):
            raise TokenKeyError(f"{url}: not a discovery document")
        # OIDC discovery: the document must be the configured issuer's, or its keys would be
        # trusted for tokens of another issuer.
        if self._issuer and document.get("issuer") != self._issuer:
            raise TokenKeyError(
                f"{url}: issuer {document.get('issuer')!r} is not the configured {self._issuer!r}"
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise TokenKeyError(f"{url}: no jwks_uri")
        return require_safe_url(jwks_uri, setting="jwks_uri")
