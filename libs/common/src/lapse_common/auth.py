"""Caller identity: bearer JWTs on every gRPC call, checked against configured keys."""

from __future__ import annotations

import contextvars
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lapse_common.group_directory import GroupDirectory, watch_group_directory
from lapse_common.private_files import write_private_file
from lapse_common.settings import AuthSettings
from lapse_common.watched_file import WatchedFile

ADMIN_ROLE = "admin"
SRE_ROLE = "sre"
AUDITOR_ROLE = "auditor"
_ALGORITHMS = ["EdDSA", "RS256", "ES256"]


@dataclass(frozen=True)
class Identity:
    subject: str
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    token: str = field(default="", repr=False)

    def has_role(self, role: str) -> bool:
        return role in self.roles


class InvalidToken(Exception):
    pass


class TokenVerifier:
    def __init__(
        self,
        *,
        keys: list[Any],
        issuer: str,
        audience: str,
        directory: WatchedFile[GroupDirectory] | None = None,
    ) -> None:
        if not keys:
            raise ValueError("no token verification key configured (LAPSE_AUTH_PUBLIC_KEY_FILE)")
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._directory = directory

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> TokenVerifier:
        keys: list[Any] = []
        if settings.public_key_file is not None:
            keys.append(serialization.load_pem_public_key(settings.public_key_file.read_bytes()))
        if settings.jwks_file is not None:
            jwks = jwt.PyJWKSet.from_json(settings.jwks_file.read_text())
            keys.extend(k.key for k in jwks.keys)
        directory = (
            watch_group_directory(settings.directory_file)
            if settings.directory_file is not None
            else None
        )
        return cls(
            keys=keys, issuer=settings.issuer, audience=settings.audience, directory=directory
        )

    def groups_of(self, subject: str, *, claimed: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The token's groups plus those the directory file lists the subject in."""
        if self._directory is None:
            return claimed
        return self._directory.current.groups_of(subject, claimed=claimed)

    def verify(self, token: str) -> Identity:
        last_error: Exception | None = None
        for key in self._keys:
            try:
                claims = jwt.decode(
                    token,
                    key=key,
                    algorithms=_ALGORITHMS,
                    audience=self._audience,
                    issuer=self._issuer,
                    options={"require": ["exp", "sub", "iss", "aud"]},
                )
            except jwt.InvalidSignatureError as error:
                last_error = error
                continue
            except jwt.PyJWTError as error:
                raise InvalidToken(str(error)) from error
            subject = str(claims["sub"])
            return Identity(
                subject=subject,
                groups=self.groups_of(
                    subject, claimed=tuple(str(g) for g in claims.get("groups", []))
                ),
                roles=tuple(str(r) for r in claims.get("roles", [])),
                token=token,
            )
        raise InvalidToken(f"signature matches no configured key ({last_error})")


def mint_token(
    *,
    private_key_pem: bytes,
    subject: str,
    groups: list[str],
    roles: list[str],
    ttl_seconds: int,
    issuer: str = "lapse-dev",
    audience: str = "lapse",
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
    return jwt.encode(claims, key, algorithm="EdDSA")  # type: ignore[arg-type]


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


_current_identity: contextvars.ContextVar[Identity] = contextvars.ContextVar("lapse_identity")


def current_identity() -> Identity:
    """The authenticated caller of the gRPC call being served."""
    return _current_identity.get()


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses any call without a valid bearer token (UNAUTHENTICATED) and exposes the
    caller through `current_identity()` to the handlers. Unary and server-streaming
    methods are covered; a method of any other shape is refused outright, so a new
    streaming RPC can never be served unauthenticated by accident."""

    def __init__(self, verifier: TokenVerifier, *, public_methods: frozenset[str] = frozenset()):
        self._verifier = verifier
        self._public = public_methods

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method in self._public:
            return handler
        metadata = dict(details.invocation_metadata or ())
        header = str(metadata.get("authorization", ""))
        problem = ""
        identity: Identity | None = None
        if not header.lower().startswith("bearer "):
            problem = "missing bearer token: send 'authorization: Bearer <JWT>' (lapse login)"
        else:
            try:
                identity = self._verifier.verify(header[7:].strip())
            except InvalidToken as error:
                problem = f"invalid bearer token: {error}"
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def unary_call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if identity is None:
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, problem)
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
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, problem)
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
