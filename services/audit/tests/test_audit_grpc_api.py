"""The AuditService over real gRPC in-process: authentication, roles, errors, results."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from lapse_audit.operations.record_event import record_event
from lapse_common.pb.lapse.v1 import audit_service_pb2, audit_service_pb2_grpc, events_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit.tests.audit_events import decoded, grant_fact
from services.audit.tests.audit_server import AuditServer, audit_server

NOW = datetime(2025, 3, 1, 12, 0, 5, tzinfo=UTC)
TokenFor = Callable[..., list[tuple[str, str]]]


@pytest.fixture
async def server(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> AsyncIterator[AuditServer]:
    async with audit_server(sessions, tmp_path) as running:
        yield running


@pytest.fixture
def stub(server: AuditServer) -> audit_service_pb2_grpc.AuditServiceAsyncStub:
    return server.stub


@pytest.fixture
def token_for(server: AuditServer) -> TokenFor:
    def metadata(*roles: str, subject: str = "carol") -> list[tuple[str, str]]:
        return server.bearer(*roles, subject=subject)

    return metadata


async def record_grant_facts(sessions: async_sessionmaker[AsyncSession], *grant_ids: str) -> None:
    for grant_id in grant_ids:
        async with sessions() as session, session.begin():
            await record_event(
                session,
                event=decoded(grant_fact(grant_id, "r-1"), request_id="r-1", grant_id=grant_id),
                topic="lapse.grants.v1",
                recorded_at=NOW,
            )


async def test_a_call_without_a_token_is_unauthenticated(
    stub: audit_service_pb2_grpc.AuditServiceAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListEvents(audit_service_pb2.ListAuditEventsRequest())

    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_caller_without_an_oversight_role_is_denied(
    stub: audit_service_pb2_grpc.AuditServiceAsyncStub, token_for: TokenFor
) -> None:
    for call, request in [
        (stub.ListEvents, audit_service_pb2.ListAuditEventsRequest()),
        (stub.VerifyChain, audit_service_pb2.VerifyChainRequest()),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(request, metadata=token_for("requester", subject="mallory"))

        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "mallory may not read the audit log" in (raised.value.details() or "")
        assert "admin, sre, auditor" in (raised.value.details() or "")


@pytest.mark.parametrize("role", ["admin", "sre", "auditor"])
async def test_oversight_roles_list_events_in_chain_order(
    stub: audit_service_pb2_grpc.AuditServiceAsyncStub,
    sessions: async_sessionmaker[AsyncSession],
    token_for: TokenFor,
    role: str,
) -> None:
    await record_grant_facts(sessions, "g-1", "g-2", "g-1")

    response = await stub.ListEvents(
        audit_service_pb2.ListAuditEventsRequest(grant_id="g-1"), metadata=token_for(role)
    )

    assert [event.sequence for event in response.events] == [1, 3]
    first = response.events[0]
    assert first.type == "lapse.v1.GrantStatusChanged"
    assert first.topic == "lapse.grants.v1"
    assert (first.request_id, first.grant_id, first.producer) == ("r-1", "g-1", "test")
    assert first.occurred_at.ToDatetime(tzinfo=UTC) == datetime(2025, 3, 1, 12, 0, 0, 123456, UTC)
    assert first.recorded_at.ToDatetime(tzinfo=UTC) == NOW
    assert json.loads(first.payload_json)["grant_id"] == "g-1"
    assert len(first.hash) == 64 and len(first.prev_hash) == 64


async def test_bad_paging_input_is_an_invalid_argument(
    stub: audit_service_pb2_grpc.AuditServiceAsyncStub, token_for: TokenFor
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListEvents(
            audit_service_pb2.ListAuditEventsRequest(limit=-3), metadata=token_for("auditor")
        )

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limit must be 0" in (raised.value.details() or "")


async def test_verify_chain_reports_the_checked_events(
    stub: audit_service_pb2_grpc.AuditServiceAsyncStub,
    sessions: async_sessionmaker[AsyncSession],
    token_for: TokenFor,
) -> None:
    await record_grant_facts(sessions, "g-1", "g-2")

    response = await stub.VerifyChain(
        audit_service_pb2.VerifyChainRequest(), metadata=token_for("sre")
    )

    assert response.ok, response.detail
    assert response.events_checked == 2
    assert response.first_bad_sequence == 0


async def test_large_events_are_paged_within_the_grpc_message_limit(
    stub: audit_service_pb2_grpc.AuditServiceAsyncStub,
    sessions: async_sessionmaker[AsyncSession],
    token_for: TokenFor,
) -> None:
    # Quarantined records carry the raw bytes, shown again as base64 in the JSON.
    for index in range(4):
        big = events_pb2.QuarantinedMessage(
            source_topic="t", value=bytes(900_000), reason=str(index)
        )
        async with sessions() as session, session.begin():
            await record_event(session, event=decoded(big), topic="q", recorded_at=NOW)

    pages: list[list[int]] = []
    after = 0
    while True:
        response = await stub.ListEvents(
            audit_service_pb2.ListAuditEventsRequest(after_sequence=after),
            metadata=token_for("auditor"),
        )
        if not response.events:
            break
        pages.append([event.sequence for event in response.events])
        after = response.events[-1].sequence

    assert [sequence for page in pages for sequence in page] == [1, 2, 3, 4]
    assert len(pages) > 1
