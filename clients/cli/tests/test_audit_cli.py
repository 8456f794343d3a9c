"""`lapse audit ...` through typer's CliRunner against a real AuditService gRPC server
(in-process, on SQLite), as a user would run it."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from google.protobuf.message import Message
from lapse_audit.operations.record_event import record_event
from lapse_cli.main import app
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner, Result

from services.audit.tests.audit_events import decoded, grant_fact, request_submitted
from services.audit.tests.audit_server import AuditServer, audit_server
from services.audit.tests.chain_rewrite import delete_and_rehash

NOW = datetime(2025, 3, 1, 12, 0, 5, tzinfo=UTC)


@pytest.fixture
async def server(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> AsyncIterator[AuditServer]:
    async with audit_server(sessions, tmp_path) as running:
        yield running


async def lapse(server: AuditServer, *args: str, role: str = "auditor") -> Result:
    """The CLI in a thread, so the server keeps serving on this event loop."""
    env = {
        "LAPSE_AUDIT_ADDRESS": server.address,
        "LAPSE_TOKEN": server.token(role) if role else "",
        "LAPSE_CLI_HOME": str(server.keys / "cli-home"),
        # The in-process audit server listens in the clear on the loopback; TLS is tested
        # in lapse_common's transport tests and on the real stack.
        "LAPSE_GRPC_ALLOW_PLAINTEXT": "true",
    }
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, app, ["audit", *args], env=env)


async def append(
    sessions: async_sessionmaker[AsyncSession], payload: Message, **envelope: str
) -> None:
    async with sessions() as session, session.begin():
        await record_event(session, event=decoded(payload, **envelope), topic="t", recorded_at=NOW)


def revoked(grant_id: str) -> events_pb2.GrantStatusChanged:
    fact = grant_fact(grant_id, "r-1")
    fact.status = common_pb2.GRANT_STATUS_REVOKED
    fact.actor = "scheduler"
    fact.spec.CopyFrom(
        common_pb2.GrantSpec(
            integration_id="demo-pg", resource="appdb", permission="read", principal="alice"
        )
    )
    return fact


async def lifecycle(sessions: async_sessionmaker[AsyncSession]) -> None:
    await append(sessions, request_submitted("r-1"), request_id="r-1")  # 1
    granted = grant_fact("g-1", "r-1")
    granted.spec.CopyFrom(revoked("g-1").spec)
    await append(sessions, granted, request_id="r-1", grant_id="g-1")  # 2
    await append(sessions, revoked("g-1"), request_id="r-1", grant_id="g-1")  # 3
    for index in range(4):  # 4..7
        await append(sessions, request_submitted(f"r-x{index}"), request_id=f"r-x{index}")


async def test_list_prints_one_page_and_the_next_token(
    server: AuditServer, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await lifecycle(sessions)

    first = await lapse(server, "list", "--page-size", "3")
    token = first.stderr.split("--page-token ")[1].strip()
    second = await lapse(server, "list", "--page-size", "3", "--page-token", token)
    everything = await lapse(server, "list", "--page-size", "2", "--all", "--json")

    assert first.exit_code == 0, first.output
    assert [line.split()[0] for line in first.stdout.splitlines()] == ["1", "2", "3"]
    assert "GrantStatusChanged" in first.stdout.splitlines()[1]
    assert [line.split()[0] for line in second.stdout.splitlines()] == ["4", "5", "6"]
    assert [json.loads(line)["sequence"] for line in everything.stdout.splitlines()] == list(
        range(1, 8)
    )


async def test_list_filters(
    server: AuditServer, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await lifecycle(sessions)

    by_grant = await lapse(server, "list", "--grant", "g-1", "--json")
    by_type = await lapse(server, "list", "--type", "GrantStatusChanged", "--json")
    by_actor = await lapse(server, "list", "--actor", "scheduler", "--json")
    later = await lapse(server, "list", "--since", "2030-01-01", "--json")
    bad_time = await lapse(server, "list", "--since", "yesterday")

    def sequences(result: Result) -> list[int]:
        return [json.loads(line)["sequence"] for line in result.stdout.splitlines()]

    assert sequences(by_grant) == [2, 3]
    assert sequences(by_type) == [2, 3]
    assert sequences(by_actor) == [3]
    assert sequences(later) == []
    assert bad_time.exit_code == 2
    assert "--since 'yesterday' is not an ISO 8601 time" in bad_time.stderr


async def test_verify_with_a_checkpoint_passes_then_fails_after_delete_and_rehash(
    server: AuditServer, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    await lifecycle(sessions)
    kept = tmp_path / "kept-checkpoint.json"
    made = await lapse(server, "checkpoint", "--output", str(kept), role="sre")
    assert made.exit_code == 0, made.output
    public_key = str(server.checkpoint_public_key)

    intact = await lapse(server, "verify", "--checkpoint", str(kept), "--public-key", public_key)
    async with sessions() as session, session.begin():
        await delete_and_rehash(session, sequence=3)
    for path in server.store.directory.glob("checkpoint-0*.json"):
        path.unlink()  # the attacker cleans the server's copies too
    unanchored = await lapse(server, "verify")
    anchored = await lapse(server, "verify", "--checkpoint", str(kept))

    assert intact.exit_code == 0, intact.output
    assert "ok: 7 events and 2 checkpoint(s); head is sequence 7" in intact.stdout
    assert unanchored.exit_code == 0  # the finding: the database alone cannot tell
    assert anchored.exit_code == 1
    assert "audit chain verification FAILED at sequence 7" in anchored.stderr
    assert "events were removed" in anchored.stderr


async def test_verify_refuses_a_forged_checkpoint_locally_and_on_the_server(
    server: AuditServer, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    await lifecycle(sessions)
    made = await lapse(server, "checkpoint", role="admin")
    forged = json.loads(made.stdout)
    forged["head_hash"] = "0" * 64
    forged_file = tmp_path / "forged.json"
    forged_file.write_text(json.dumps(forged))

    local = await lapse(
        server,
        "verify",
        "--checkpoint",
        str(forged_file),
        "--public-key",
        str(server.checkpoint_public_key),
    )
    remote = await lapse(server, "verify", "--checkpoint", str(forged_file))

    assert local.exit_code == 1
    assert "signature does not verify" in local.stderr
    assert remote.exit_code == 1
    assert "INVALID_ARGUMENT" in remote.stderr and "signature does not verify" in remote.stderr


async def test_export_jsonl_to_a_file_with_progress(
    server: AuditServer, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    await lifecycle(sessions)
    target = tmp_path / "audit.jsonl"

    result = await lapse(server, "export", "--format", "jsonl", "--output", str(target))

    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [line["sequence"] for line in lines] == list(range(1, 8))
    assert lines[2]["payload"]["status"] == "GRANT_STATUS_REVOKED"
    assert lines[1]["prev_hash"] == lines[0]["hash"]
    assert "exported 7 events (" in result.stderr and "/s)" in result.stderr
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".audit.jsonl")]


async def test_export_ocsf_maps_grants_and_revokes_to_user_access_management(
    server: AuditServer, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await lifecycle(sessions)

    result = await lapse(server, "export", "--format", "ocsf", "--request", "r-1")

    assert result.exit_code == 0, result.output
    submitted, granted, revoked_event = (json.loads(line) for line in result.stdout.splitlines())
    assert (granted["class_uid"], granted["activity_id"], granted["type_uid"]) == (3005, 1, 300501)
    assert granted["category_uid"] == 3
    assert granted["activity_name"] == "Assign Privileges"
    assert granted["privileges"] == ["read"]
    assert granted["user"] == {"name": "alice"}
    assert granted["resource"]["uid"] == "demo-pg/appdb"
    assert (revoked_event["class_uid"], revoked_event["activity_id"]) == (3005, 2)
    assert revoked_event["type_uid"] == 300502
    assert revoked_event["actor"] == {"user": {"name": "scheduler"}}
    assert (submitted["class_uid"], submitted["activity_id"], submitted["type_uid"]) == (0, 99, 99)
    for event in (submitted, granted, revoked_event):
        assert event["metadata"]["version"].startswith("1.")
        assert event["metadata"]["product"]["name"] == "Lapse"
        assert isinstance(event["time"], int) and event["time"] > 1_700_000_000_000
        assert event["severity_id"] == 1
        assert event["unmapped"]["lapse"]["event_id"] == event["metadata"]["uid"]
    assert revoked_event["unmapped"]["lapse"]["sequence"] == 3
    assert revoked_event["unmapped"]["lapse"]["payload"]["grant_id"] == "g-1"


async def test_a_caller_without_an_oversight_role_gets_the_services_refusal(
    server: AuditServer,
) -> None:
    result = await lapse(server, "list", role="requester")

    assert result.exit_code == 1
    assert "PERMISSION_DENIED" in result.stderr
    assert "may not read the audit log" in result.stderr


async def test_an_unreachable_service_is_named(tmp_path: Path) -> None:
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke,
        app,
        ["audit", "verify"],
        env={
            "LAPSE_AUDIT_ADDRESS": "127.0.0.1:1",
            "LAPSE_TOKEN": "x",
            "LAPSE_GRPC_ALLOW_PLAINTEXT": "true",
        },
    )

    assert result.exit_code == 1
    assert "cannot reach the audit service at 127.0.0.1:1" in result.stderr


async def test_page_size_is_checked_before_any_call(server: AuditServer) -> None:
    result = await lapse(server, "list", "--page-size", "5000")

    assert result.exit_code == 2
    assert "--page-size must be between 1 and 1000" in result.stderr
