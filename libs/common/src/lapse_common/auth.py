"""Caller identity: bearer JWTs on every gRPC call, checked against configured keys.

A token is accepted when its issuer is trusted, it names (by `kid`, or by being the only
one) a key of that issuer and its `alg` is the one that key is pinned to, its signature,
audience, `exp` and `iat` check out, it lives no longer than the maximum lifetime, `sub` is
a non-empty string and `roles` / `groups`, when present, are lists of strings. Keys come
from lapse_common.token_keys, service credentials from lapse_common.service_credentials.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lapse_common.dev_trust import DEV_ISSUER, DevTrustRefused, refuse_dev_trust_in_production
from lapse_common.field_bounds import MAX_ITEMS, MAX_TEXT, excerpt
from lapse_common.group_directory import GroupDirectory, watch_group_directory
from lapse_common.private_files import write_private_file
from lapse_common.service_credentials import (
    MAX_SERVICE_TOKEN_SECONDS,
    SERVICE_CLAIM,
    SERVICE_SUBJECT_PREFIX,
    load_service_keys,
    service_audience,
)
from lapse_common.settings import AuthSettings
from lapse_common.token_keys import (
    CombinedKeySet,
    JwksFileKeySet,
    KeySet,
    RemoteKeySet,
    StaticKeySet,
    VerificationKey,
    load_pem_public_key,
)
from lapse_common.watched_file import WatchedFile

ADMIN_ROLE = "admin"
SRE_ROLE = "sre"
AUDITOR_ROLE = "auditor"
# Clock skew tolerated between the token's issuer and us.
_LEEWAY_SECONDS = 30


@dataclass(frozen=True)
class Identity:
    subject: str
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    token: str = field(default="", repr=False)
    # The calling Lapse service's name for a service credential; empty for a person.
    service: str = ""

    def has_role(self, role: str) -> bool:
        return role in self.roles


class InvalidToken(Exception):
    pass


class UnknownKeyId(InvalidToken):
    """The token names a `kid` the issuer's key set does not have (yet)."""


@dataclass(frozen=True)
class TrustedIssuer:
    name: str
    keys: KeySet
    # Trusted to say who the caller is, nothing more: roles and groups come from the
    # directory file, never from the token.
    subject_only: bool = False


def _string_list(claims: dict[str, Any], name: str) -> tuple[str, ...]:
    value = claims.get(name, [])
    # A bare string would otherwise be iterated into one role per character.
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise InvalidToken(
            f"claim {name!r} must be a list of non-empty strings, not {type(value).__name__}"
        )
    # The caller's groups travel in events (RequestSubmitted.requester_groups) that every
    # consumer screens: a token beyond those bounds is refused here, not a request later.
    if len(value) > MAX_ITEMS:
        raise InvalidToken(f"claim {name!r} has {len(value)} items; the limit is {MAX_ITEMS}")
    for item in value:
        _within_field_bounds(name, item)
    return tuple(value)


def _within_field_bounds(claim: str, text: str) -> None:
    if len(text) > MAX_TEXT or "\x00" in text:
        raise InvalidToken(
            f"claim {claim!r} has a value of {len(text)} characters or with a NUL "
            f"({excerpt(text)}); at most {MAX_TEXT} characters without NUL are allowed"
        )


def _select_key(
    keys: tuple[VerificationKey, ...], header: dict[str, Any], *, issuer: str
) -> VerificationKey:
    """The one key a token may be checked with: the one its `kid` names; without a kid the
    issuer's only key, or its PEM key (which has no id)."""
    kid = header.get("kid")
    if kid is not None:
        if not isinstance(kid, str):
            raise InvalidToken("header kid must be a string")
        for key in keys:
            if key.kid == kid:
                return key
        raise UnknownKeyId(f"kid {kid!r} is not among the {len(keys)} keys of issuer {issuer!r}")
    if len(keys) == 1:
        return keys[0]
    unnamed = [key for key in keys if key.kid is None]
    if len(unnamed) == 1:
        return unnamed[0]
    raise InvalidToken(
        f"token has no kid and issuer {issuer!r} has {len(keys)} keys: a kid is required"
    )


class TokenVerifier:
    def __init__(
        self,
        *,
        issuers: list[TrustedIssuer],
        audience: str,
        max_lifetime_seconds: int = 12 * 3600,
        directory: WatchedFile[GroupDirectory] | None = None,
        service_keys: dict[str, VerificationKey] | None = None,
        service_name: str = "",
    ) -> None:
        if not issuers:
            raise ValueError("no trusted token issuer configured")
        self._issuers = {issuer.name: issuer for issuer in issuers}
        self._audience = audience
        self._max_lifetime = max_lifetime_seconds
        self._directory = directory
        self._service_keys = service_keys or {}
        self._service_audience = service_audience(service_name) if service_name else ""

    @classmethod
    def from_settings(cls, settings: AuthSettings, *, service: str = "") -> TokenVerifier:
        """The verifier a service runs with; `service` is its own name, the audience of the
        service credentials it accepts (with LAPSE_AUTH_SERVICE_PUBLIC_KEY_FILES). Refuses (raises)
        what must not run: dev trust in production mode, no key, no issuer."""
        refuse_dev_trust_in_production(settings)
        sources: list[KeySet] = []
        if settings.public_key_file is not None:
            sources.append(StaticKeySet((load_pem_public_key(settings.public_key_file),)))
        if settings.jwks_file is not None:
            sources.append(JwksFileKeySet(settings.jwks_file))
        if settings.jwks_url or settings.issuer_url:
            sources.append(
                RemoteKeySet(
                    jwks_url=settings.jwks_url,
                    issuer_url=settings.issuer_url,
                    issuer=settings.issuer or settings.issuer_url,
                    cache_seconds=settings.jwks_cache_seconds,
                    min_refetch_seconds=settings.jwks_min_refetch_seconds,
                    timeout_seconds=settings.jwks_fetch_timeout_seconds,
                )
            )
        if not sources:
            raise ValueError(
                "no token verification key configured (LAPSE_AUTH_PUBLIC_KEY_FILE, "
                "LAPSE_AUTH_JWKS_FILE, LAPSE_AUTH_JWKS_URL or LAPSE_AUTH_ISSUER_URL)"
            )
        issuer = settings.issuer or settings.issuer_url or (DEV_ISSUER if settings.dev_mode else "")
        if not issuer:
            raise ValueError("LAPSE_AUTH_ISSUER is not set: the identity provider's issuer (iss)")
        issuers = [TrustedIssuer(issuer, CombinedKeySet(sources))]
        for name, key in settings.subject_only_issuer_keys().items():
            if name == issuer:
                raise ValueError(
                    f"LAPSE_AUTH_SUBJECT_ONLY_ISSUERS: {name!r} is LAPSE_AUTH_ISSUER already"
                )
            issuers.append(TrustedIssuer(name, _key_set_at(key), subject_only=True))
        directory = (
            watch_group_directory(settings.directory_file)
            if settings.directory_file is not None
            else None
        )
        service_keys = load_service_keys(settings.service_public_key_paths()) if service else {}
        return cls(
            issuers=issuers,
            audience=settings.audience,
            max_lifetime_seconds=settings.max_token_lifetime_seconds,
            directory=directory,
            service_keys=service_keys,
            service_name=service,
        )

    def groups_of(self, subject: str, *, claimed: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The token's groups plus those the directory file lists the subject in."""
        if self._directory is None:
            return claimed
        return self._directory.current.groups_of(subject, claimed=claimed)

    def roles_of(self, subject: str, *, claimed: tuple[str, ...] = ()) -> tuple[str, ...]:
        if self._directory is None:
            return claimed
        return self._directory.current.roles_of(subject, claimed=claimed)

    async def verify_async(self, token: str) -> Identity:
        """verify(), with the issuer's remote keys fetched first when they are due, and once
        more (rate-limited by the key set) when the token names a kid not yet known."""
        keys = self._key_set_of(token)
        if keys is not None:
            await keys.refresh_if_stale()
        try:
            return self.verify(token)
        except UnknownKeyId:
            if keys is not None and await keys.refresh():
                return self.verify(token)
            raise

    def _key_set_of(self, token: str) -> KeySet | None:
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except Exception:  # verify() says what is wrong
            return None
        trusted = self._issuers.get(issuer) if isinstance(issuer, str) else None
        return trusted.keys if trusted is not None else None

    def verify(self, token: str) -> Identity:
        try:
            return self._verify(token)
        except InvalidToken:
            raise
        except jwt.PyJWTError as error:
            raise InvalidToken(str(error)) from error
        except (TypeError, ValueError, KeyError) as error:
            # A malformed token must never become an UNKNOWN with Python's text.
            raise InvalidToken(f"malformed token ({type(error).__name__})") from error

    def _verify(self, token: str) -> Identity:
        header, unverified = _unverified_parts(token)
        issuer = unverified.get("iss")
        if not isinstance(issuer, str) or not issuer:
            raise InvalidToken("token has no issuer (iss)")
        if issuer.startswith(SERVICE_SUBJECT_PREFIX):
            return self._verify_service(token, header, issuer)
        trusted = self._issuers.get(issuer)
        if trusted is None:
            raise InvalidToken(f"issuer {issuer!r} is not trusted")
        claims = self._decode(
            token,
            header,
            _select_key(trusted.keys.current(), header, issuer=issuer),
            issuer=issuer,
            audience=self._audience,
            max_lifetime=self._max_lifetime,
        )
        subject = claims["sub"]
        if subject.startswith(SERVICE_SUBJECT_PREFIX):
            raise InvalidToken(f"a person's subject may not start with {SERVICE_SUBJECT_PREFIX!r}")
        groups, roles = _string_list(claims, "groups"), _string_list(claims, "roles")
        if trusted.subject_only:
            groups, roles = (), ()
        return Identity(
            subject=subject,
            groups=self.groups_of(subject, claimed=groups),
            roles=self.roles_of(subject, claimed=roles),
            token=token,
        )

    def _verify_service(self, token: str, header: dict[str, Any], issuer: str) -> Identity:
        name = issuer.removeprefix(SERVICE_SUBJECT_PREFIX)
        if not self._service_audience:
            raise InvalidToken("this service accepts no service credentials")
        key = self._service_keys.get(name)
        if key is None:
            raise InvalidToken(f"service {name!r} is not among the trusted calling services")
        claims = self._decode(
            token,
            header,
            key,
            issuer=issuer,
            audience=self._service_audience,
            max_lifetime=MAX_SERVICE_TOKEN_SECONDS,
        )
        if claims["sub"] != issuer or claims.get(SERVICE_CLAIM) != name:
            raise InvalidToken(f"service token sub and {SERVICE_CLAIM} must name {name!r}")
        return Identity(subject=issuer, token=token, service=name)

    @staticmethod
    def _decode(
        token: str,
        header: dict[str, Any],
        key: VerificationKey,
        *,
        issuer: str,
        audience: str,
        max_lifetime: int,
    ) -> dict[str, Any]:
        algorithm = header.get("alg")
        if algorithm != key.algorithm:
            raise InvalidToken(f"alg {algorithm!r} does not fit the key (it signs {key.algorithm})")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[key.algorithm],
                audience=audience,
                issuer=issuer,
                leeway=_LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.InvalidSignatureError as error:
            raise InvalidToken(f"signature matches no configured key ({error})") from error
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.strip():
            raise InvalidToken("sub must be a non-empty string")
        _within_field_bounds("sub", subject)
        lifetime = claims["exp"] - claims["iat"]
        if lifetime > max_lifetime:
            raise InvalidToken(
                f"token lifetime {int(lifetime)} s (exp - iat) is longer than the {max_lifetime} s "
                "allowed (LAPSE_AUTH_MAX_TOKEN_LIFETIME_SECONDS)"
            )
        return claims


def _unverified_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims, read only to pick the issuer and key; the signature and every claim
    are checked by jwt.decode afterwards. Parsed here once, cheaply: PyJWT's own unverified
    parse costs as much as the verification itself on every call."""
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("not a JWT (header.payload.signature)")
    try:
        header, claims = (
            json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
            for part in parts[:2]
        )
    except (binascii.Error, ValueError) as error:
        raise InvalidToken(
            "malformed token (its header or payload is not base64url JSON)"
        ) from error
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidToken("malformed token (its header and payload must be JSON objects)")
    return header, claims


def verifier_for_service(settings: AuthSettings, *, name: str, service: str = "") -> TokenVerifier:
    """TokenVerifier.from_settings at a service's start: what it refuses ends the process with
    one line naming the setting to fix, not a traceback."""
    try:
        return TokenVerifier.from_settings(settings, service=service)
    except (DevTrustRefused, ValueError, OSError) as error:
        raise SystemExit(f"lapse-{name}: refusing to start: {error}") from error


def _key_set_at(where: str) -> KeySet:
    """A subject-only issuer's keys: an https JWKS URL, a JWKS file (*.json) or a PEM file."""
    if "://" in where:
        return RemoteKeySet(jwks_url=where)
    path = Path(where)
    if path.suffix == ".json":
        return JwksFileKeySet(path)
    return StaticKeySet((load_pem_public_key(path),))


def _signing_algorithm(key: Any) -> str:
    if isinstance(key, Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ES256"
    raise ValueError("token keys must be Ed25519, RSA or EC P-256 private keys")


def mint_token(
    *,
    private_key_pem: bytes,
    subject: str,
    groups: list[str],
    roles: list[str],
    ttl_seconds: int,
    issuer: str = DEV_ISSUER,
    audience: str = "lapse",
    key_id: str | None = None,
) -> str:
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    now = int(time.time())
    claims = {
        "sub": subject,
        "groups": groups,
        "roles": roles,
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "exp": now + ttl_seconds,
        "jti": str(uuid.uuid4()),
    }
    headers = {"kid": key_id} if key_id else None
    return jwt.encode(claims, key, algorithm=_signing_algorithm(key), headers=headers)  # type: ignore[arg-type]


def ensure_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    """Create an Ed25519 key pair (for dev tokens or command signing) if missing."""
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / f"{name}.key", directory / f"{name}.pub"
    if not private_path.exists():
        key = Ed25519PrivateKey.generate()
        write_private_file(
            private_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        public_path.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return private_path, public_path


# A refused call's status and message.
Refusal = tuple[grpc.StatusCode, str]

_current_identity: contextvars.ContextVar[Identity] = contextvars.ContextVar("lapse_identity")


def current_identity() -> Identity:
    """The authenticated caller of the gRPC call being served."""
    return _current_identity.get()


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses any call without a valid bearer token (UNAUTHENTICATED) and exposes the
    caller through `current_identity()` to the handlers. Unary and server-streaming
    methods are covered; a method of any other shape is refused outright, so a new
    streaming RPC can never be served unauthenticated by accident.

    `internal_methods` maps a full method name (`/lapse.v1.ApprovalService/CheckRequest`) to
    the Lapse services that may call it: only their service credentials are accepted there
    (a person's token gets PERMISSION_DENIED), and service credentials are accepted nowhere
    else."""

    def __init__(
        self,
        verifier: TokenVerifier,
        *,
        public_methods: frozenset[str] = frozenset(),
        internal_methods: Mapping[str, frozenset[str]] | None = None,
    ):
        self._verifier = verifier
        self._public = public_methods
        self._internal = dict(internal_methods or {})

    async def _authorize(self, header: str, method: str) -> tuple[Identity | None, Refusal]:
        if not header.lower().startswith("bearer "):
            return None, (
                grpc.StatusCode.UNAUTHENTICATED,
                "missing bearer token: send 'authorization: Bearer <JWT>' (lapse login)",
            )
        try:
            identity = await self._verifier.verify_async(header[7:].strip())
        except InvalidToken as error:
            return None, (grpc.StatusCode.UNAUTHENTICATED, f"invalid bearer token: {error}")
        callers = self._internal.get(method)
        if callers is not None and identity.service not in callers:
            return None, (
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method} is internal to Lapse: only the {', '.join(sorted(callers))} "
                "service may call it, with its own service credential",
            )
        if callers is None and identity.service:
            return None, (
                grpc.StatusCode.PERMISSION_DENIED,
                f"service credentials are not accepted on {method}: call it as a person",
            )
        return identity, (grpc.StatusCode.OK, "")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method in self._public:
            return handler
        metadata = dict(details.invocation_metadata or ())
        identity, (code, problem) = await self._authorize(
            str(metadata.get("authorization", "")), details.method
        )
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def unary_call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if identity is None:
                    await context.abort(code, problem)
                assert identity is not None  # abort() raised otherwise
                _current_identity.set(identity)
                return await unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary_call,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            streaming = handler.unary_stream

            async def streaming_call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if identity is None:
                    await context.abort(code, problem)
                assert identity is not None  # abort() raised otherwise
                _current_identity.set(identity)
                async for item in streaming(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                streaming_call,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        async def unsupported(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "unsupported call shape")

        return grpc.unary_unary_rpc_method_handler(unsupported)


def describe_identity(identity: Identity) -> str:
    return json.dumps({"sub": identity.subject, "groups": identity.groups, "roles": identity.roles})
