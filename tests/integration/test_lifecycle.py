"""One access lifecycle through every service, on real Kafka and PostgreSQL, asserted on
the target itself: request (CLI) -> auto-approval -> grant by the agent -> ACTIVE ->
expiry -> revoke by the agent, verified -> REVOKED, each event audited once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

import pytest
from lapse_common.clock import as_utc
from lapse_common.pb.lapse.v1 import common_pb2

from tests.integration.clients import StackClients, has_role
from tests.integration.kafka_records import read_all
from tests.integration.waiting import wait_for
from tests.stack import LapseStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def run_cli(stack: LapseStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lapse_cli", *args],
        env=stack.environment(),
        capture_output=True,
        text=True,
        check=False,
    )


def grant_statuses(view: object) -> list[str]:
    return [step.status for grant in view.grants for step in grant.history]  # type: ignore[attr-defined]


async def test_request_to_revoked_through_every_service(
    stack: LapseStack, capsys: pytest.CaptureFixture[str]
) -> None:
    clients = StackClients(stack)
    login = stack.login_for("alice")
    alice = stack.token("alice")
    auditor = stack.token("auditor-1", roles=("auditor",))
    try:
        logged_in = run_cli(stack, "login", "--dev", "--user", "alice", "--groups", "engineering")
        assert logged_in.returncode == 0, logged_in.stderr
        assert not await has_role(stack.infra.target_admin_dsn, login=login, role=stack.read_role)

        started = time.monotonic()
        submitted = run_cli(
            stack,
            "request",
            "demo-pg/appdb",
            "read",
            "--as",
            login,
            "--for",
            "6s",
            "--reason",
            "lifecycle test",
            "--json",
        )
        assert submitted.returncode == 0, submitted.stderr
        request_id = json.loads(submitted.stdout)["request_id"]

        active = await wait_for(
            lambda: clients.get_request(request_id, alice),
            lambda v: bool(v.grants) and v.grants[0].status == common_pb2.GRANT_STATUS_ACTIVE,
            what="grant ACTIVE",
        )
        to_active = time.monotonic() - started
        assert active.status == common_pb2.REQUEST_STATUS_APPROVED
        assert await has_role(stack.infra.target_admin_dsn, login=login, role=stack.read_role)
        grant = active.grants[0]
        expires_at = as_utc(grant.expires_at.ToDatetime())

        revoked = await wait_for(
            lambda: clients.get_request(request_id, alice),
            lambda v: v.grants[0].status == common_pb2.GRANT_STATUS_REVOKED,
            what="grant REVOKED",
        )
        assert not await has_role(stack.infra.target_admin_dsn, login=login, role=stack.read_role)
        history = revoked.grants[0].history
        assert [step.status for step in history] == ["GRANTING", "ACTIVE", "REVOKING", "REVOKED"]
        revoked_at = as_utc(history[-1].at.ToDatetime())
        expiry_to_revoked = (revoked_at - expires_at).total_seconds()
        assert history[-1].reason == common_pb2.REASON_EXPIRED

        shown = run_cli(stack, "activity")
        assert shown.returncode == 0, shown.stderr
        assert "REVOKED" in shown.stdout and request_id in shown.stdout

        # Every event of the lifecycle reaches the audit log, each exactly once.
        expected = Counter(
            {
                "lapse.v1.GrantStatusChanged": 4,
                "lapse.v1.SignedCommand": 2,
                # The two results, each signed by the agent.
                "lapse.v1.SignedAgentReport": 2,
                "lapse.v1.RevokeRequested": 1,
                # The expiry reminder the requester is sent before the grant lapses.
                "lapse.v1.GrantExpiringSoon": 1,
            }
        )
        events = await wait_for(
            lambda: clients.audit_events(token=auditor, grant_id=grant.grant_id),
            lambda evs: Counter(e.type for e in evs) >= expected,
            what="audit to hold the grant's events",
        )
        assert Counter(e.type for e in events) == expected
        assert len({e.event_id for e in events}) == len(events)
        # One trace follows the request over every Kafka hop, through the outboxes.
        trace_ids = set()
        for topic in (
            "lapse.requests.v1",
            "lapse.decisions.v1",
            "lapse.agent.demo-agent.commands.v1",
            "lapse.agent-results.v1",
            "lapse.grants.v1",
            "lapse.revoke-requests.v1",
        ):
            records = await read_all(stack.observer, stack.topic_prefix + topic)
            for record in records:
                if record.key in (request_id.encode(), grant.grant_id.encode()):
                    traceparent = dict(record.headers)["traceparent"].decode()
                    trace_ids.add(traceparent.split("-")[1])
        assert len(trace_ids) == 1, trace_ids
        request_events = await clients.audit_events(token=auditor, request_id=request_id)
        request_types = Counter(e.type for e in request_events if not e.grant_id)
        assert request_types == Counter(
            {"lapse.v1.RequestSubmitted": 1, "lapse.v1.RequestDecided": 1}
        )
    finally:
        await clients.close()
    with capsys.disabled():
        print(
            f"\n[lifecycle] request -> ACTIVE: {to_active:.2f}s; "
            f"expiry -> REVOKED: {expiry_to_revoked:.3f}s"
        )
