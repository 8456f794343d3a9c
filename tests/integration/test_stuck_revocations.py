"""Revocations whose agent is gone: retries on the configured schedule, the dead letter
with its history, REVOKING + stuck, and the SRE's replay or cancel."""

from __future__ import annotations

import itertools
import json
import signal

import grpc
import pytest
from lapse_common.clock import as_utc
from lapse_common.messaging.codec import decode
from lapse_common.pb.lapse.v1 import (
    common_pb2,
    events_pb2,
    revoker_service_pb2,
    revoker_service_pb2_grpc,
)

from tests.integration.clients import StackClients, bearer, has_role, run_cli
from tests.integration.kafka_records import read_all
from tests.integration.revocation_support import (
    SRE_ROLES,
    agent_results,
    submit,
    wait_grant,
)
from tests.integration.waiting import wait_for
from tests.stack import LapseStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def dead_letters(stack: LapseStack, grant_id: str) -> list[tuple[object, dict[str, str]]]:
    records = await read_all(stack.observer, stack.topic_prefix + "lapse.revoking-dead-letter.v1")
    return [
        (decode(r.value).payload, {k: v.decode() for k, v in r.headers})
        for r in records
        if r.key == grant_id.encode()
    ]


async def stuck_grant(clients: StackClients, stack: LapseStack, *, user: str) -> str:
    """An ACTIVE grant whose agent dies before it expires; returns once it is stuck."""
    request_id = await submit(clients, stack, user=user, seconds=8)
    grant = await wait_grant(clients, stack, request_id, status=common_pb2.GRANT_STATUS_ACTIVE)
    stack.processes["agent"].kill(signal.SIGKILL)
    await wait_grant(
        clients, stack, request_id, status=common_pb2.GRANT_STATUS_REVOKING, stuck=True
    )
    return grant.grant_id


async def test_dead_agent_dead_letters_then_sre_replay_revokes(
    stack: LapseStack, capsys: pytest.CaptureFixture[str]
) -> None:
    clients = StackClients(stack)
    sre = stack.token("sre-1", roles=SRE_ROLES)
    login = stack.login_for("alice")
    try:
        grant_id = await stuck_grant(clients, stack, user="alice")
        assert await has_role(stack.infra.target_admin_dsn, login=login, role=stack.read_role)

        letters = await wait_for(lambda: dead_letters(stack, grant_id), bool, what="dead letter")
        record, headers = letters[0]
        assert isinstance(record, events_pb2.RevocationDeadLettered)
        assert (record.spec.principal, record.spec.agent_id) == (login, "demo-agent")
        assert [a.attempt for a in record.attempts] == [1, 2, 3]
        assert all("no ack from agent demo-agent within 3s" in a.error for a in record.attempts)
        sent = [as_utc(a.sent_at.ToDatetime()) for a in record.attempts]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(sent)]
        due = as_utc(record.first_due_at.ToDatetime())
        # Deadline 3 s, then backoff 1 s then 2 s (+ up to 20 % jitter) before the next try;
        # the retry loop looks every 0.5 s, and a busy machine may add a little.
        assert 4.0 <= gaps[0] <= 6.0 and 5.0 <= gaps[1] <= 7.5, gaps
        summary = json.loads(headers["lapse-summary"])
        assert summary["grant_id"] == grant_id and summary["attempts"] == 3

        refused = run_cli(stack, "revocations", "replay", grant_id, token=stack.token("alice"))
        assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr

        listed = run_cli(stack, "revocations", "stuck", "--agent", "demo-agent", token=sre)
        assert listed.returncode == 0 and grant_id in listed.stdout, listed.stderr
        shown = run_cli(stack, "revocations", "show", grant_id, token=sre)
        attempt_lines = [
            line for line in shown.stdout.splitlines() if line.strip().startswith("attempt ")
        ]
        assert len(attempt_lines) == 3 and all(
            "no ack from agent" in line for line in attempt_lines
        )

        stack.restart("agent")
        replayed = run_cli(
            stack, "revocations", "replay", grant_id, "--reason", "agent is back", token=sre
        )
        assert replayed.returncode == 0, replayed.stderr
        assert "[1/1] ok" in replayed.stdout and "1 of 1 done" in replayed.stdout
        final = await wait_grant(
            clients,
            stack,
            (await clients.get_request_for_grant(grant_id, sre)),
            status=common_pb2.GRANT_STATUS_REVOKED,
        )
        assert not await has_role(stack.infra.target_admin_dsn, login=login, role=stack.read_role)
        assert [s.status for s in final.history][-3:] == ["REVOKING", "REVOKING", "REVOKED"]
        assert final.epoch > record.epoch
    finally:
        if stack.processes["agent"].process and stack.processes["agent"].process.poll() is not None:
            stack.restart("agent")
        await clients.close()
    with capsys.disabled():
        print(
            f"\n[stuck] attempts sent {gaps[0]:.2f}s and {gaps[1]:.2f}s apart; first attempt "
            f"{(sent[0] - due).total_seconds():.3f}s after due; dead-lettered with 3 attempts"
        )


async def test_cancel_leaves_unverified_access_visible_and_is_never_executed(
    stack: LapseStack,
) -> None:
    clients = StackClients(stack)
    sre = stack.token("sre-1", roles=SRE_ROLES)
    auditor = stack.token("auditor-1", roles=("auditor",))
    # u08 holds no other access: an overlapping grant would keep it in the target anyway.
    login = stack.login_for("u08")
    try:
        grant_id = await stuck_grant(clients, stack, user="u08")
        # Giving up on a revocation leaves access behind: the CLI and the API want a reason.
        unexplained = run_cli(stack, "revocations", "cancel", grant_id, "--yes", token=sre)
        assert unexplained.returncode == 2 and "--reason" in unexplained.stderr
        blank = run_cli(
            stack, "revocations", "cancel", grant_id, "--reason", "  ", "--yes", token=sre
        )
        assert blank.returncode == 2 and "--reason is required" in blank.stderr
        async with stack.aio_channel("revoker") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as no_reason:
                async for _ in revoker_service_pb2_grpc.RevokerServiceStub(
                    channel
                ).CancelRevocations(
                    revoker_service_pb2.CancelRevocationsRequest(
                        grant_ids=[grant_id], acknowledge_access_may_remain=True
                    ),
                    metadata=bearer(sre),
                ):
                    pass
        assert no_reason.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "reason is required" in (no_reason.value.details() or "")
        declined = run_cli(
            stack, "revocations", "cancel", grant_id, "--reason", "x", token=sre, answer="n\n"
        )
        assert declined.returncode == 1 and "nothing canceled" in declined.stderr
        assert "may still exist in the target" in declined.stderr
        still = await clients.get_request(
            await clients.get_request_for_grant(grant_id, sre), stack.token("u08")
        )
        assert [g.status for g in still.grants] == [common_pb2.GRANT_STATUS_REVOKING]

        canceled = run_cli(
            stack,
            "revocations",
            "cancel",
            grant_id,
            "--reason",
            "agent host decommissioned",
            token=sre,
            answer="y\n",
        )
        assert canceled.returncode == 0, canceled.stderr
        assert "WARNING" in canceled.stderr and "1 of 1 done" in canceled.stdout
        request_id = await clients.get_request_for_grant(grant_id, sre)
        grant = await wait_grant(
            clients, stack, request_id, status=common_pb2.GRANT_STATUS_REVOKE_CANCELED
        )
        assert "may still exist in the target" in grant.history[-1].detail
        shown = run_cli(stack, "revocations", "show", grant_id, token=sre)
        assert "resolved by sre-1: agent host decommissioned" in shown.stdout, shown.stdout

        unverified = run_cli(stack, "access", "unverified", token=sre)
        assert grant_id in unverified.stdout and "may still exist" in unverified.stdout
        own = run_cli(stack, "access", "unverified", token=stack.token("u08"))
        assert grant_id in own.stdout
        other = run_cli(stack, "access", "unverified", token=stack.token("alice"))
        assert grant_id not in other.stdout

        events = await wait_for(
            lambda: clients.audit_events(token=auditor, grant_id=grant_id),
            lambda evs: (
                any("REVOKE_CANCELED" in e.payload_json for e in evs)
                and any(e.type == "lapse.v1.StuckRevocationResolved" for e in evs)
            ),
            what="the cancel in the audit log",
        )
        cancel_fact = next(e for e in events if "REVOKE_CANCELED" in e.payload_json)
        assert "sre-1" in cancel_fact.payload_json and "WARNING" in cancel_fact.payload_json

        # The agent comes back and reads the abandoned commands: it must not act on them.
        stack.restart("agent")
        answered = await wait_for(
            lambda: agent_results(stack, grant_id),
            lambda results: sum(r.kind == common_pb2.COMMAND_KIND_REVOKE for r in results) >= 3,
            what="the agent to answer the abandoned revoke commands",
        )
        revokes = [r for r in answered if r.kind == common_pb2.COMMAND_KIND_REVOKE]
        assert all(r.outcome == events_pb2.RESULT_OUTCOME_REJECTED for r in revokes), revokes
        assert all("expired" in r.detail for r in revokes), [r.detail for r in revokes]
        assert await has_role(stack.infra.target_admin_dsn, login=login, role=stack.read_role)
    finally:
        if stack.processes["agent"].process and stack.processes["agent"].process.poll() is not None:
            stack.restart("agent")
        await clients.close()
