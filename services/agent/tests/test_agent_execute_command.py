"""The execute/receive use cases against an in-memory connector: dispatch, idempotence,
epochs, duplicates, error classification and refusals. The real PostgreSQL connector is
covered by tests/integration."""

from __future__ import annotations

from lapse_agent.connectors.base import (
    Access,
    Connector,
    PermanentTargetError,
    TransientTargetError,
)
from lapse_agent.ledger import CommandLedger
from lapse_common.clock import ManualClock
from lapse_common.command_signing import CommandSigner, CommandVerifier
from lapse_common.pb.lapse.v1 import commands_pb2, common_pb2, events_pb2

from services.agent.tests.agent_commands import (
    AGENT_ID,
    INTEGRATION_ID,
    CommandFactory,
    execute_one,
    receive_one,
)
from services.agent.tests.in_memory_connector import InMemoryConnector

GRANT = common_pb2.COMMAND_KIND_GRANT
REVOKE = common_pb2.COMMAND_KIND_REVOKE
DISCOVER = common_pb2.COMMAND_KIND_DISCOVER
SUCCEEDED = events_pb2.RESULT_OUTCOME_SUCCEEDED
FAILED_TRANSIENT = events_pb2.RESULT_OUTCOME_FAILED_TRANSIENT
FAILED_PERMANENT = events_pb2.RESULT_OUTCOME_FAILED_PERMANENT
REJECTED = events_pb2.RESULT_OUTCOME_REJECTED


def connectors(target: InMemoryConnector) -> dict[str, Connector]:
    return {INTEGRATION_ID: target}


async def run(
    command: commands_pb2.AgentCommand,
    target: InMemoryConnector,
    ledger: CommandLedger,
    clock: ManualClock,
) -> events_pb2.AgentResult:
    return await execute_one(
        command=command,
        agent_id=AGENT_ID,
        connectors=connectors(target),
        principal_rules={},
        ledger=ledger,
        clock=clock,
    )


ALICE_READ = Access(resource="appdb", permission="read", principal="alice")


async def test_grant_then_revoke_with_verification(
    make_command: CommandFactory, ledger: CommandLedger, clock: ManualClock
) -> None:
    target = InMemoryConnector()
    granted = await run(make_command(kind=GRANT, epoch=1), target, ledger, clock)
    assert (granted.outcome, granted.changed, granted.verified) == (SUCCEEDED, True, False)
    assert granted.agent_id == AGENT_ID
    assert granted.grant_id == "grant-1"
    assert granted.completed_at.ToDatetime().year == 2030
    assert ALICE_READ in target.held

    revoked = await run(make_command(kind=REVOKE, epoch=2), target, ledger, clock)
    assert (revoked.outcome, revoked.changed, revoked.verified) == (SUCCEEDED, True, True)
    assert target.calls == ["grant", "revoke", "verify"]
    assert not target.held


async def test_idempotent_connector_outcomes_pass_through(
    make_command: CommandFactory, ledger: CommandLedger, clock: ManualClock
) -> None:
    target = InMemoryConnector()
    revoked = await run(make_command(kind=REVOKE, epoch=1), target, ledger, clock)
    assert (revoked.outcome, revoked.changed, revoked.verified) == (SUCCEEDED, False, True)
    assert "not held" in revoked.detail


async def test_revoke_asked_to_end_sessions_ends_them_and_says_how_many(
    make_command: CommandFactory, ledger: CommandLedger, clock: ManualClock
) -> None:
    target = InMemoryConnector()
    target.held.add(ALICE_READ)
    target.sessions["alice"] = 2
    plain = await run(make_command(kind=REVOKE, epoch=2), target, ledger, clock)
    assert (plain.outcome, plain.verified) == (SUCCEEDED, True)
    assert "session" not in plain.detail
    assert target.sessions == {"alice": 2}, "a plain revoke leaves sessions alone"

    ended = await run(make_command(kind=REVOKE, epoch=3, end_sessions=True), target, ledger, clock)
    assert (ended.outcome, ended.changed, ended.verified) == (SUCCEEDED, False, True)
    assert "ended 2 session(s)" in ended.detail
    assert target.sessions == {}


async def test_revoke_that_did_not_take_effect_is_not_success(
    make_command: CommandFactory, ledger: CommandLedger, clock: ManualClock
) -> None:
    target = InMemoryConnector()
    target.held.add(ALICE_READ)
    target.revoke_is_ignored = True
    result = await run(make_command(kind=REVOKE, epoch=2), target, ledger, clock)
    assert result.outcome == FAILED_PERMANENT
    assert result.verified is False
    assert "still present" in result.detail


async def test_exact_duplicate_is_reacknowledged_not_rerun(
    make_command: CommandFactory, ledger: CommandLedger, clock: ManualClock
) -> None:
    target = InMemoryConnector()
    command = make_command(kind=GRANT, epoch=1)
    first = await run(command, target, ledger, clock)
    target.held.clear()  # were it to run again, the grant would visibly change something
    again = await run(command, target, ledger, clock)
    assert target.calls == ["grant"]
    assert again.outcome == first.outcome == SUCCEEDED
    assert again.changed is False
    assert again.detail.startswith("duplicate delivery")
    assert first.detail in again.detail
    assert again.command_id == command.command_id


async def test_grant_after_newer_revoke_is_rejected_and_not_run(
    make_command: CommandFactory, ledger: CommandLedger, clock: ManualClock
) -> None:
    target = InMemoryConnector()
    await run(make_command(kind=REVOKE, epoch=2), target, ledger, clock)
    late = await run(make_command(kind=GRANT, epoch=1), target, ledger, clock)
    assert late.outcome == REJECTED
    assert late.detail == "stale epoch 1 < 2"
    assert "grant" not in target.calls
    assert not target.held


async def test_transient_failures_are_retried_on_redelivery(
    make_command: CommandFactory, ledger: CommandLedger, clock: ManualClock
) -> None:
    target = InMemoryConnector()
    command = make_command(kind=GRANT, epoch=1)
    target.fail_with = TransientTargetError("demo-pg: connection refused")
    failed = await run(command, target, ledger, clock)
    assert failed.outcome == FAILED_TRANSIENT
    assert failed.detail == "demo-pg: connection refused"

    target.fail_with = None
    retried = await run(command, target, ledger, clock)
    assert (retried.outcome, retried.changed) == (SUCCEEDED, True)


async def test_permanent_failures_are_remembered(
    make_command: CommandFactory, ledger: CommandLedger, clock: ManualClock
) -> None:
    target = InMemoryConnector()
    command = make_command(kind=GRANT, epoch=1)
    target.fail_with = PermanentTargetError("login alice does not exist in target")
    assert (await run(command, target, ledger, clock)).outcome == FAILED_PERMANENT
    target.fail_with = None
    again = await run(command, target, ledger, clock)
    assert again.outcome == FAILED_PERMANENT
    assert again.detail.startswith("duplicate delivery")
    assert "login alice does not exist in target" in again.detail


async def test_unexpected_connector_error_is_transient(
    make_command: CommandFactory, ledger: CommandLedger, clock: ManualClock
) -> None:
    target = InMemoryConnector()
    target.fail_with = KeyError("bug")
    result = await run(make_command(kind=GRANT), target, ledger, clock)
    assert result.outcome == FAILED_TRANSIENT
    assert "unexpected agent error: KeyError" in result.detail


async def test_unknown_integration_is_a_permanent_failure(
    make_command: CommandFactory, ledger: CommandLedger, clock: ManualClock
) -> None:
    result = await run(make_command(integration_id="nope"), InMemoryConnector(), ledger, clock)
    assert result.outcome == FAILED_PERMANENT
    assert "integration 'nope' is not configured on agent agent-under-test" in result.detail


async def test_discover_reports_holdings_and_absence(
    make_command: CommandFactory, ledger: CommandLedger, clock: ManualClock
) -> None:
    target = InMemoryConnector()
    target.held.add(Access(resource="appdb", permission="read", principal="bob"))
    result = await run(
        make_command(kind=DISCOVER, grant_id="g-cancelled", principal="alice"),
        target,
        ledger,
        clock,
    )
    assert result.outcome == SUCCEEDED
    assert result.verified is True  # alice does not hold it: verified absent
    assert '"principal":"bob"' in result.detail
    assert '"principal_holds":false' in result.detail


async def test_receive_refuses_forged_commands_without_running_them(
    signer: CommandSigner,
    verifier: CommandVerifier,
    make_command: CommandFactory,
    ledger: CommandLedger,
    clock: ManualClock,
) -> None:
    target = InMemoryConnector()
    signed = signer.sign(make_command(kind=GRANT, grant_id="g-9", epoch=3))
    signed.signature = bytes(64)
    result = await receive_one(
        payload=signed,
        agent_id=AGENT_ID,
        verifier=verifier,
        connectors=connectors(target),
        principal_rules={},
        ledger=ledger,
        clock=clock,
    )
    assert result.outcome == REJECTED
    assert (result.grant_id, result.epoch) == ("g-9", 3)
    assert "signature does not verify" in result.detail
    assert target.calls == []
    # A forged command id must not poison the ledger for the genuine command.
    genuine = await receive_one(
        payload=signer.sign(make_command(kind=GRANT, grant_id="g-9", epoch=3)),
        agent_id=AGENT_ID,
        verifier=verifier,
        connectors=connectors(target),
        principal_rules={},
        ledger=ledger,
        clock=clock,
    )
    assert genuine.outcome == SUCCEEDED


async def test_receive_refuses_bare_unsigned_commands(
    verifier: CommandVerifier,
    make_command: CommandFactory,
    ledger: CommandLedger,
    clock: ManualClock,
) -> None:
    target = InMemoryConnector()
    result = await receive_one(
        payload=make_command(),
        agent_id=AGENT_ID,
        verifier=verifier,
        connectors=connectors(target),
        principal_rules={},
        ledger=ledger,
        clock=clock,
    )
    assert result.outcome == REJECTED
    assert "not signed" in result.detail
    assert target.calls == []


async def test_receive_runs_a_valid_command(
    signer: CommandSigner,
    verifier: CommandVerifier,
    make_command: CommandFactory,
    ledger: CommandLedger,
    clock: ManualClock,
) -> None:
    target = InMemoryConnector()
    result = await receive_one(
        payload=signer.sign(make_command(kind=GRANT)),
        agent_id=AGENT_ID,
        verifier=verifier,
        connectors=connectors(target),
        principal_rules={},
        ledger=ledger,
        clock=clock,
    )
    assert (result.outcome, result.changed) == (SUCCEEDED, True)
    assert ALICE_READ in target.held
