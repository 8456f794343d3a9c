"""ApprovalService/CheckRequest is internal: only the request service's own credential gets
through, people's tokens are PERMISSION_DENIED, and service credentials open nothing else."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from lapse_approval.grpc_api import INTERNAL_METHODS
from lapse_common.auth import AuthInterceptor, TokenVerifier, ensure_keypair, mint_token
from lapse_common.pb.lapse.v1 import approval_service_pb2, approval_service_pb2_grpc
from lapse_common.service_credentials import ServiceCredentials
from lapse_common.settings import AuthSettings


class Echo(approval_service_pb2_grpc.ApprovalServiceServicer):
    async def CheckRequest(self, request: Any, context: Any) -> Any:
        return approval_service_pb2.CheckRequestResponse(flow=f"for {request.requester_subject}")

    async def ListFlows(self, request: Any, context: Any) -> Any:
        return approval_service_pb2.ListFlowsResponse()


class Keys:
    def __init__(self, root: Path) -> None:
        self.user_key, self.user_public = ensure_keypair(root, "dev-token")
        self.request_key, self.request_public = ensure_keypair(root / "services", "request")
        self.other_key, self.other_public = ensure_keypair(root / "services", "revoker")


@pytest.fixture
async def approval(tmp_path: Path) -> AsyncIterator[tuple[Keys, Any]]:
    keys = Keys(tmp_path)
    verifier = TokenVerifier.from_settings(
        AuthSettings(
            dev_mode=True,
            public_key_file=keys.user_public,
            # Both are trusted callers of approval, but only request may call CheckRequest.
            service_public_key_files=f"{keys.request_public},{keys.other_public}",
        ),
        service="approval",
    )
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(verifier, internal_methods=INTERNAL_METHODS)]
    )
    approval_service_pb2_grpc.add_ApprovalServiceServicer_to_server(Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield keys, approval_service_pb2_grpc.ApprovalServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(None)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value


CHECK = approval_service_pb2.CheckRequestRequest(requester_subject="alice")


async def test_a_user_token_on_check_request_is_permission_denied(
    approval: tuple[Keys, Any],
) -> None:
    keys, stub = approval
    admin = mint_token(
        private_key_pem=keys.user_key.read_bytes(),
        subject="alice",
        groups=[],
        roles=["admin"],
        ttl_seconds=60,
    )
    error = await refused(stub.CheckRequest(CHECK, metadata=bearer(admin)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "internal to Lapse: only the request service" in (error.details() or "")
    # The same token is fine on a user method.
    await stub.ListFlows(approval_service_pb2.ListFlowsRequest(), metadata=bearer(admin))


async def test_the_request_service_credential_reaches_check_request_only(
    approval: tuple[Keys, Any],
) -> None:
    keys, stub = approval
    credentials = ServiceCredentials(
        service="request", private_key_pem=keys.request_key.read_bytes()
    )
    answer = await stub.CheckRequest(CHECK, metadata=credentials.metadata_for("approval"))
    assert answer.flow == "for alice"
    error = await refused(
        stub.ListFlows(
            approval_service_pb2.ListFlowsRequest(),
            metadata=credentials.metadata_for("approval"),
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "service credentials are not accepted" in (error.details() or "")


async def test_another_trusted_service_may_not_call_check_request(
    approval: tuple[Keys, Any],
) -> None:
    keys, stub = approval
    revoker = ServiceCredentials(service="revoker", private_key_pem=keys.other_key.read_bytes())
    error = await refused(stub.CheckRequest(CHECK, metadata=revoker.metadata_for("approval")))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def service_token(private_pem: bytes, **overrides: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "service:request",
        "sub": "service:request",
        "lapse_service": "request",
        "aud": "lapse-approval",
        "iat": now,
        "exp": now + 60,
        "jti": str(uuid.uuid4()),
    }
    claims.update(overrides)
    key = serialization.load_pem_private_key(private_pem, password=None)
    return jwt.encode(claims, key, algorithm="EdDSA")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("who", "overrides", "problem"),
    [
        # The user key (held by whoever runs `lapse login --dev`) cannot sign as a service.
        ("user", {}, "signature"),
        # The request service's credential for another callee is not good here.
        ("request", {"aud": "lapse-revoker"}, "(?i)audience"),
        ("request", {"exp": int(time.time()) + 3600}, "longer than the 300 s"),
        ("request", {"lapse_service": "revoker"}, "must name 'request'"),
        ("request", {"iss": "service:nobody", "sub": "service:nobody"}, "not among the trusted"),
    ],
)
async def test_forged_or_stretched_service_credentials_are_unauthenticated(
    approval: tuple[Keys, Any], who: str, overrides: dict[str, Any], problem: str
) -> None:
    keys, stub = approval
    private = keys.user_key if who == "user" else keys.request_key
    token = service_token(private.read_bytes(), **overrides)
    error = await refused(stub.CheckRequest(CHECK, metadata=bearer(token)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert re.search(problem, error.details() or ""), error.details()


def test_service_credentials_are_short_lived_and_reused_until_near_expiry(
    tmp_path: Path,
) -> None:
    private, _ = ensure_keypair(tmp_path, "request")
    now = [1_000_000.0]
    credentials = ServiceCredentials(
        service="request", private_key_pem=private.read_bytes(), clock=lambda: now[0]
    )
    first = credentials.token_for("approval")
    claims = jwt.decode(first, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] <= 300
    assert (claims["sub"], claims["aud"], claims["lapse_service"]) == (
        "service:request",
        "lapse-approval",
        "request",
    )
    now[0] += 30
    assert credentials.token_for("approval") == first
    now[0] += 60
    assert credentials.token_for("approval") != first
    with pytest.raises(ValueError, match="1..300"):
        ServiceCredentials(
            service="request", private_key_pem=private.read_bytes(), lifetime_seconds=3600
        )
