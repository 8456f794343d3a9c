"""Grants and revokes for principals the agent must not touch are refused before the
connector runs anything: `postgres`, the target's superusers, the agent's own login, the
integration's deny patterns and, when it has one, anything off its allow list. Refusals are
permanent failures with the reason, recorded so a redelivery does not try again."""

from __future__ import annotations

from pathlib import Path

import pytest
from lapse_agent.config import ConfigError, load_config
from lapse_agent.connectors.base import Access, TransientTargetError
from lapse_agent.ledger import CommandLedger
from lapse_agent.principal_rules import PrincipalRules
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
FAILED_PERMANENT = events_pb2.RESULT_OUTCOME_FAILED_PERMANENT
FAILED_TRANSIENT = events_pb2.RESULT_OUTCOME_FAILED_TRANSIENT


async def run(
    command: commands_pb2.AgentCommand,
    target: InMemoryConnector,
    ledger: CommandLedger,
    clock: ManualClock,
    rules: PrincipalRules | None = None,
) -> events_pb2.AgentResult:
    return await execute_one(
        command=command,
        agent_id=AGENT_ID,
        connectors={INTEGRATION_ID: target},
        principal_rules={} if rules is None else {INTEGRATION_ID: rules},
        ledger=ledger,
        clock=clock,
    )


@pytest.mark.parametrize("kind", [GRANT, REVOKE])
@pytest.mark.parametrize("principal", ["postgres", "Postgres", "POSTGRES"])
async def test_postgres_is_refused_without_touching_the_target(
    make_command: CommandFactory,
    ledger: CommandLedger,
    clock: ManualClock,
    kind: common_pb2.CommandKind.ValueType,
    principal: str,
) -> None:
    target = InMemoryConnector()
    held = Access(resource="appdb", permission="read", principal=principal)
    if kind == REVOKE:
        target.held.add(held)
    result = await run(make_command(kind=kind, principal=principal), target, ledger, clock)
    assert result.outcome == FAILED_PERMANENT
    assert result.detail == (
        f"refused: principal {principal!r} is 'postgres', the conventional superuser name, "
        "which this agent never grants to or revokes from"
    )
    assert (result.changed, result.verified) == (False, False)
    # Nothing ran: no grant, revoke or read-back, not even the superuser lookup.
    assert target.calls == []
    assert target.privileged_reads == 0
    assert (held in target.held) == (kind == REVOKE)


async def test_a_refusal_is_recorded_so_a_redelivery_is_not_retried(
    make_command: CommandFactory, ledger: CommandLedger, clock: ManualClock
) -> None:
    target = InMemoryConnector()
    command = make_command(kind=GRANT, principal="postgres")
    first = await run(command, target, ledger, clock)
    again = await run(command, target, ledger, clock)
    assert first.outcome == again.outcome == FAILED_PERMANENT
    assert again.detail.startswith("duplicate delivery; first result at ")
    assert "conventional superuser name" in again.detail
    assert target.calls == []


@pytest.mark.parametrize("kind", [GRANT, REVOKE])
async def test_a_target_superuser_is_refused_before_any_change(
    make_command: CommandFactory,
    ledger: CommandLedger,
    clock: ManualClock,
    kind: common_pb2.CommandKind.ValueType,
) -> None:
    target = InMemoryConnector()
    target.superusers = {"dba_root"}
    result = await run(make_command(kind=kind, principal="dba_root"), target, ledger, clock)
    assert result.outcome == FAILED_PERMANENT
    assert result.detail == (
        f"refused: principal 'dba_root' is a superuser in integration {INTEGRATION_ID}; "
        "this agent never grants to or revokes from superusers"
    )
    assert target.privileged_reads == 1
    assert target.calls == []


@pytest.mark.parametrize("kind", [GRANT, REVOKE])
async def test_the_agents_own_login_is_refused(
    make_command: CommandFactory,
    ledger: CommandLedger,
    clock: ManualClock,
    kind: common_pb2.CommandKind.ValueType,
) -> None:
    target = InMemoryConnector()
    result = await run(make_command(kind=kind, principal="lapse_agent"), target, ledger, clock)
    assert result.outcome == FAILED_PERMANENT
    assert "is the login this agent uses for integration demo-pg" in result.detail
    assert target.calls == []


async def test_when_superusers_cannot_be_read_nothing_is_granted_and_it_is_retried(
    make_command: CommandFactory, ledger: CommandLedger, clock: ManualClock
) -> None:
    target = InMemoryConnector()
    target.fail_with = TransientTargetError("demo-pg: connection refused")
    result = await run(make_command(kind=GRANT), target, ledger, clock)
    assert result.outcome == FAILED_TRANSIENT
    assert target.calls == [] and target.held == set()


async def test_deny_patterns_match_regardless_of_case(
    make_command: CommandFactory, ledger: CommandLedger, clock: ManualClock
) -> None:
    target = InMemoryConnector()
    rules = PrincipalRules(deny=("svc_*", "replicator"))
    for principal in ("svc_backup", "SVC_Backup", "Replicator"):
        result = await run(make_command(principal=principal), target, ledger, clock, rules)
        assert result.outcome == FAILED_PERMANENT, principal
        assert f"principal {principal!r} matches deny pattern" in result.detail
        assert "of integration demo-pg" in result.detail
    granted = await run(make_command(principal="alice"), target, ledger, clock, rules)
    assert granted.outcome == SUCCEEDED
    assert target.calls == ["grant"]


async def test_with_an_allow_list_only_matching_principals_are_granted(
    make_command: CommandFactory, ledger: CommandLedger, clock: ManualClock
) -> None:
    target = InMemoryConnector()
    rules = PrincipalRules(allow=("app_*", "alice"))
    for principal in ("alice", "app_reports"):
        result = await run(make_command(principal=principal), target, ledger, clock, rules)
        assert result.outcome == SUCCEEDED, principal
    # Case-sensitive, as PostgreSQL compares role names: "Alice" is another role.
    for principal in ("bob", "Alice", "app"):
        result = await run(make_command(principal=principal), target, ledger, clock, rules)
        assert result.outcome == FAILED_PERMANENT, principal
        assert result.detail == (
            f"refused: principal {principal!r} is not on the allow list of integration "
            "demo-pg (allowed: 'app_*', 'alice')"
        )
    assert target.calls == ["grant", "grant"]
    assert {a.principal for a in target.held} == {"alice", "app_reports"}


async def test_an_allow_list_does_not_let_superusers_through(
    make_command: CommandFactory, ledger: CommandLedger, clock: ManualClock
) -> None:
    target = InMemoryConnector()
    target.superusers = {"app_admin"}
    rules = PrincipalRules(allow=("app_*", "postgres"))
    for principal in ("app_admin", "postgres"):
        result = await run(make_command(principal=principal), target, ledger, clock, rules)
        assert result.outcome == FAILED_PERMANENT, principal
    assert target.calls == []


async def test_discovery_naming_a_superuser_still_runs(
    make_command: CommandFactory, ledger: CommandLedger, clock: ManualClock
) -> None:
    """Reading who holds what changes nothing, and an operator needs to see it."""
    target = InMemoryConnector()
    result = await run(
        make_command(kind=DISCOVER, grant_id="", principal="postgres"), target, ledger, clock
    )
    assert result.outcome == SUCCEEDED
    assert target.calls == ["discover"]


async def test_a_signed_grant_to_postgres_through_the_whole_receive_path(
    signer: CommandSigner,
    verifier: CommandVerifier,
    make_command: CommandFactory,
    ledger: CommandLedger,
    clock: ManualClock,
) -> None:
    target = InMemoryConnector()
    result = await receive_one(
        payload=signer.sign(make_command(kind=GRANT, principal="postgres", grant_id="g-pg")),
        agent_id=AGENT_ID,
        verifier=verifier,
        connectors={INTEGRATION_ID: target},
        principal_rules={},
        ledger=ledger,
        clock=clock,
    )
    assert (result.outcome, result.grant_id) == (FAILED_PERMANENT, "g-pg")
    assert "conventional superuser name" in result.detail
    assert target.calls == [] and target.held == set()


CONFIG = """
integrations:
  - id: demo-pg
    kind: postgres
    dsn: postgresql://agent@db/app
    resources:
      appdb:
        permissions:
          read: demo_read
"""


def test_principal_rules_come_from_the_integrations_config(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(CONFIG + "    principals:\n      deny: [svc_*]\n      allow: [app_*, alice]\n")
    rules = load_config(path, environ={}).principal_rules()
    assert rules == {"demo-pg": PrincipalRules(deny=("svc_*",), allow=("app_*", "alice"))}
    path.write_text(CONFIG)
    assert load_config(path, environ={}).principal_rules() == {"demo-pg": PrincipalRules()}


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("allow: []", "an empty allow list would refuse every principal"),
        ("deny: ['']", "deny pattern '' must be 1-128 characters"),
        ("allow: ['" + "a" * 200 + "']", "allow pattern 'aaaa"),
        ("except: [x]", "field 'principals.except'"),
    ],
)
def test_bad_principal_rules_name_the_field(tmp_path: Path, block: str, message: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(CONFIG + f"    principals:\n      {block}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    assert message in str(raised.value)
    assert "integration 'demo-pg'" in str(raised.value)
