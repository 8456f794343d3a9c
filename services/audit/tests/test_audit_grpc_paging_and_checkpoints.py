"""ListEvents paging and filters, VerifyChain against checkpoints and CreateCheckpoint,
over real gRPC with token checks and request screening."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message
from lapse_audit.operations.record_event import record_event
from lapse_common.pb.lapse.v1 import audit_service_pb2, events_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit.tests.audit_events import OCCURRED_AT, decoded, grant_fact
from services.audit.tests.audit_server import AuditServer, audit_server
from services.audit.tests.chain_rewrite import delete_and_rehash

NOW = datetime(2025, 3, 1, 12, 0, 5, tzinfo=UTC)


@pytest.fixture
async def server(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> AsyncIterator[AuditServer]:
    async with audit_server(sessions, tmp_path) as running:
        yield running


async def append(
    sessions: async_sessionmaker[AsyncSession], payload: Message, **envelope: str
) -> None:
    async with sessions() as session, session.begin():
        await record_event(session, event=decoded(payload, **envelope), topic="t", recorded_at=NOW)


async def append_grants(sessions: async_sessionmaker[AsyncSession], count: int) -> None:
    for index in range(count):
        await append(sessions, grant_fact(f"g-{index}", "r-1"), grant_id=f"g-{index}")


async def all_pages(
    server: AuditServer, request: audit_service_pb2.ListAuditEventsRequest
) -> list[list[int]]:
    pages = []
    while True:
        response = await server.stub.ListEvents(request, metadata=server.bearer("auditor"))
        pages.append([event.sequence for event in response.events])
        if not response.next_page_token:
            return pages
        request.page_token = response.next_page_token


async def refused(server: AuditServer, request: Message, call: str = "ListEvents") -> str:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await getattr(server.stub, call)(request, metadata=server.bearer("auditor"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    return raised.value.details() or ""


# ---------------------------------------------------------------- paging


async def test_page_tokens_cover_every_event_exactly_once(
    server: AuditServer, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await append_grants(sessions, 23)

    pages = await all_pages(server, audit_service_pb2.ListAuditEventsRequest(page_size=5))

    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    assert [sequence for page in pages for sequence in page] == list(range(1, 24))


async def test_a_full_last_page_ends_with_an_empty_one(
    server: AuditServer, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await append_grants(sessions, 4)

    pages = await all_pages(server, audit_service_pb2.ListAuditEventsRequest(page_size=2))

    assert pages == [[1, 2], [3, 4], []]


async def test_the_default_page_is_100(
    server: AuditServer, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await append_grants(sessions, 101)

    pages = await all_pages(server, audit_service_pb2.ListAuditEventsRequest())

    assert [len(page) for page in pages] == [100, 1]


async def test_forged_and_misused_page_tokens_are_refused(
    server: AuditServer, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await append_grants(sessions, 6)
    first = await server.stub.ListEvents(
        audit_service_pb2.ListAuditEventsRequest(page_size=2, grant_id=""),
        metadata=server.bearer("auditor"),
    )
    token = first.next_page_token
    body, _, tag = token.partition(".")
    # The body re-encoded to point elsewhere, with the old tag: not ours.
    import base64

    forged_body = (
        base64.urlsafe_b64encode(json.dumps({"after": 0, "query": "x" * 32, "v": 1}).encode())
        .decode()
        .rstrip("=")
    )

    for bad in [f"{forged_body}.{tag}", "garbage", f"{body}.", token[:-2], "é.é"]:
        details = await refused(
            server, audit_service_pb2.ListAuditEventsRequest(page_size=2, page_token=bad)
        )
        assert "page_token is not one this service issued" in details
    other_filters = await refused(
        server,
        audit_service_pb2.ListAuditEventsRequest(page_size=2, page_token=token, grant_id="g-1"),
    )
    assert "issued for other filters" in other_filters
    both = await refused(
        server,
        audit_service_pb2.ListAuditEventsRequest(page_token=token, after_sequence=3),
    )
    assert "not both" in both


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"page_size": 1001}, "page_size must be between 1 and 1000"),
        ({"page_size": -1}, "page_size must be between 1 and 1000"),
        ({"limit": -3}, "limit must be 0"),
        ({"page_token": "t" * 5000}, "page_token is 5000 characters long; the limit is 4096"),
        ({"actor": "a\x00b"}, "actor contains a NUL"),
    ],
)
async def test_out_of_bounds_paging_is_an_invalid_argument(
    server: AuditServer, request_fields: dict[str, object], message: str
) -> None:
    details = await refused(server, audit_service_pb2.ListAuditEventsRequest(**request_fields))  # type: ignore[arg-type]
    assert message in details


async def test_a_timestamp_out_of_range_is_an_invalid_argument(server: AuditServer) -> None:
    request = audit_service_pb2.ListAuditEventsRequest()
    request.occurred_after.seconds = 10**13

    details = await refused(server, request)

    assert "occurred_after must be a timestamp between years 1 and 9999" in details


# ---------------------------------------------------------------- filters


async def test_filters_by_actor_and_time_range(
    server: AuditServer, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await append(sessions, grant_fact("g-1", "r-1"))  # requester alice
    await append(sessions, events_pb2.RequestCanceled(request_id="r-2", canceled_by="bob"))
    decision = events_pb2.RequestDecided(request_id="r-3", decided_by="carol", approvers=["bob"])
    await append(sessions, decision)

    async def sequences(**fields: object) -> list[int]:
        request = audit_service_pb2.ListAuditEventsRequest(**fields)  # type: ignore[arg-type]
        response = await server.stub.ListEvents(request, metadata=server.bearer("admin"))
        return [event.sequence for event in response.events]

    assert await sequences(actor="alice") == [1]
    assert await sequences(actor="bob") == [2, 3]
    assert await sequences(actor="carol") == [3]
    assert await sequences(actor="nobody") == []
    before, after = (
        audit_service_pb2.ListAuditEventsRequest(),
        audit_service_pb2.ListAuditEventsRequest(),
    )
    before.occurred_before.FromDatetime(OCCURRED_AT)
    after.occurred_after.FromDatetime(OCCURRED_AT)
    listed_before = await server.stub.ListEvents(before, metadata=server.bearer("admin"))
    listed_after = await server.stub.ListEvents(after, metadata=server.bearer("admin"))
    assert list(listed_before.events) == []
    assert [event.sequence for event in listed_after.events] == [1, 2, 3]
    window = audit_service_pb2.ListAuditEventsRequest()
    window.occurred_after.FromDatetime(OCCURRED_AT + timedelta(seconds=1))
    window.occurred_before.FromDatetime(OCCURRED_AT + timedelta(hours=1))
    assert (
        list((await server.stub.ListEvents(window, metadata=server.bearer("admin"))).events) == []
    )


# ---------------------------------------------------------------- checkpoints


async def test_create_checkpoint_writes_a_file_and_verify_chain_uses_it(
    server: AuditServer, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await append_grants(sessions, 5)

    created = await server.stub.CreateCheckpoint(
        audit_service_pb2.CreateCheckpointRequest(), metadata=server.bearer("sre")
    )
    unchanged = await server.stub.CreateCheckpoint(
        audit_service_pb2.CreateCheckpointRequest(), metadata=server.bearer("sre")
    )
    verified = await server.stub.VerifyChain(
        audit_service_pb2.VerifyChainRequest(checkpoint_json=created.checkpoint_json),
        metadata=server.bearer("auditor"),
    )

    assert created.written and created.file_name == "checkpoint-00000000000000000005.json"
    assert (server.store.directory / created.file_name).read_text() == created.checkpoint_json
    assert not unchanged.written and unchanged.checkpoint_json == created.checkpoint_json
    assert verified.ok, verified.detail
    # The one given and the same one from the directory.
    assert verified.checkpoints_checked == 2
    assert verified.head_sequence == 5
    assert json.loads(created.checkpoint_json)["head_hash"] == verified.head_hash


async def test_deletion_and_rehash_fails_verify_chain_once_a_checkpoint_exists(
    server: AuditServer, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    await append_grants(sessions, 5)
    created = await server.stub.CreateCheckpoint(
        audit_service_pb2.CreateCheckpointRequest(), metadata=server.bearer("admin")
    )
    async with sessions() as session, session.begin():
        await delete_and_rehash(session, sequence=3)
    # The stored checkpoints are gone too (an attacker with the disk as well): the one
    # the caller kept still catches it.
    for path in server.store.directory.glob("checkpoint-0*.json"):
        path.unlink()

    alone = await server.stub.VerifyChain(
        audit_service_pb2.VerifyChainRequest(), metadata=server.bearer("auditor")
    )
    anchored = await server.stub.VerifyChain(
        audit_service_pb2.VerifyChainRequest(checkpoint_json=created.checkpoint_json),
        metadata=server.bearer("auditor"),
    )

    assert alone.ok
    assert not anchored.ok
    assert anchored.first_bad_sequence == 5
    assert "events were removed" in anchored.detail


async def test_a_forged_checkpoint_is_an_invalid_argument(
    server: AuditServer, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await append_grants(sessions, 2)
    created = await server.stub.CreateCheckpoint(
        audit_service_pb2.CreateCheckpointRequest(), metadata=server.bearer("admin")
    )
    forged = json.loads(created.checkpoint_json)
    forged["sequence"] = 1

    for text, message in [
        (json.dumps(forged), "signature does not verify"),
        ("{not json", "a checkpoint is a JSON object"),
    ]:
        details = await refused(
            server, audit_service_pb2.VerifyChainRequest(checkpoint_json=text), "VerifyChain"
        )
        assert message in details


async def test_create_checkpoint_on_an_empty_log_is_a_failed_precondition(
    server: AuditServer,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await server.stub.CreateCheckpoint(
            audit_service_pb2.CreateCheckpointRequest(), metadata=server.bearer("admin")
        )

    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "empty" in (raised.value.details() or "")


async def test_checkpoints_need_an_oversight_role(server: AuditServer) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await server.stub.CreateCheckpoint(
            audit_service_pb2.CreateCheckpointRequest(),
            metadata=server.bearer("requester", subject="mallory"),
        )

    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
