"""Token trust on the real stack: the internal CheckRequest refuses people, the request
service still reaches it with its own credential, and tokens that are too long-lived,
alg-confused or from a subject-only issuer claiming roles get nowhere."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from lapse_common.auth import mint_token
from lapse_common.pb.lapse.v1 import (
    approval_service_pb2,
    approval_service_pb2_grpc,
    audit_service_pb2,
    common_pb2,
)

from tests.integration.clients import StackClients, bearer
from tests.integration.revocation_support import submit
from tests.integration.waiting import wait_for
from tests.stack import LapseStack

pytestmark = [pytest.mark.integration]
TEN_YEARS = 10 * 365 * 86400


def check_request(stack: LapseStack, subject: str) -> approval_service_pb2.CheckRequestRequest:
    return approval_service_pb2.CheckRequestRequest(
        item=common_pb2.GrantSpec(
            integration_id="demo-pg",
            resource="appdb",
            permission="read",
            principal=stack.login_for(subject),
        ),
        duration_seconds=60,
        justification="token trust",
        requester_subject=subject,
        requester_groups=["engineering"],
    )


def claims(subject: str, *, roles: list[str]) -> dict[str, object]:
    now = int(time.time())
    return {
        "sub": subject,
        "roles": roles,
        "groups": ["engineering"],
        "iss": "lapse-dev",
        "aud": "lapse",
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }


def hs256_token(payload: dict[str, object], secret: bytes) -> str:
    """Signed by hand: PyJWT rightly refuses to use a PEM key as an HMAC secret, an attacker
    does not."""

    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


async def test_a_person_calling_check_request_directly_is_permission_denied(
    stack: LapseStack,
) -> None:
    async with stack.aio_channel("approval") as channel:
        approvals = approval_service_pb2_grpc.ApprovalServiceStub(channel)
        for roles in ((), ("admin",)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await approvals.CheckRequest(
                    check_request(stack, "alice"),
                    metadata=bearer(stack.token("alice", roles=roles)),
                    timeout=30,
                )
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "only the request service" in (refused.value.details() or "")
        # The same person's token still works on the approval service's user methods.
        flows = await approvals.ListFlows(
            approval_service_pb2.ListFlowsRequest(), metadata=bearer(stack.token("alice"))
        )
        assert flows.flows


async def test_a_forged_service_credential_is_refused(stack: LapseStack) -> None:
    """A token claiming to be the request service, signed with the dev user key (which
    anyone holding it could do), is not the request service's credential."""
    forged = mint_token(
        private_key_pem=stack.dev_key.read_bytes(),
        subject="service:request",
        groups=[],
        roles=[],
        ttl_seconds=60,
        issuer="service:request",
        audience="lapse-approval",
    )
    async with stack.aio_channel("approval") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await approval_service_pb2_grpc.ApprovalServiceStub(channel).CheckRequest(
                check_request(stack, "alice"), metadata=bearer(forged), timeout=30
            )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "signature" in (refused.value.details() or "")


async def test_a_normal_request_still_becomes_active_through_the_service_credential(
    stack: LapseStack,
) -> None:
    clients = StackClients(stack)
    try:
        request_id = await submit(clients, stack, user="t01", seconds=60)
        view = await wait_for(
            lambda: clients.get_request(request_id, stack.token("t01")),
            lambda v: bool(v.grants) and v.grants[0].status == common_pb2.GRANT_STATUS_ACTIVE,
            what="the grant ACTIVE",
        )
        assert view.requester == "t01"
    finally:
        await clients.close()


async def test_a_ten_year_dev_token_is_unauthenticated(stack: LapseStack) -> None:
    token = mint_token(
        private_key_pem=stack.dev_key.read_bytes(),
        subject="ops",
        groups=[],
        roles=["admin"],
        ttl_seconds=TEN_YEARS,
    )
    clients = StackClients(stack)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await clients.audit.ListEvents(
                audit_service_pb2.ListAuditEventsRequest(), metadata=bearer(token), timeout=30
            )
    finally:
        await clients.close()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "lifetime" in (refused.value.details() or "")


@pytest.mark.parametrize("algorithm", ["HS256", "RS256"])
async def test_an_alg_mismatched_token_is_unauthenticated(
    stack: LapseStack, algorithm: str
) -> None:
    """The dev key is Ed25519: an HMAC token keyed with its public PEM (the classic
    confusion) or an RSA-signed one must be refused as a bad token, not crash (UNKNOWN)."""
    payload = claims("mallory", roles=["admin"])
    token = (
        hs256_token(payload, stack.dev_public.read_bytes())
        if algorithm == "HS256"
        else jwt.encode(
            payload,
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            algorithm="RS256",
        )
    )
    clients = StackClients(stack)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await clients.audit.ListEvents(
                audit_service_pb2.ListAuditEventsRequest(), metadata=bearer(token), timeout=30
            )
    finally:
        await clients.close()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "does not fit the key" in (refused.value.details() or "")


async def test_the_chat_issuer_asserts_the_subject_but_not_roles(stack: LapseStack) -> None:
    token = mint_token(
        private_key_pem=stack.chatops_key.read_bytes(),
        subject="mallory",
        groups=["engineering"],
        roles=["admin", "auditor"],
        ttl_seconds=300,
        issuer="lapse-chatops",
    )
    clients = StackClients(stack)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await clients.audit.ListEvents(
                audit_service_pb2.ListAuditEventsRequest(), metadata=bearer(token), timeout=30
            )
    finally:
        await clients.close()
    # Authenticated (the subject is believed), but the claimed roles are not.
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
