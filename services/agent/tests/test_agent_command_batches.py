"""A batch of commands gives the outcome running them one by one in offset order would give:
one grant's commands in order behind the epoch fence, a repeat answered and not re-run, a
forged command in the batch refused while the rest run. Commands for different grants run
at once, never more than the integration's limit."""

from __future__ import annotations

import asyncio

from lapse_agent.connectors.base import Access, Change, TransientTargetError
from lapse_agent.ledger import CommandLedger
from lapse_agent.operations.execute_command import execute_commands
from lapse_agent.operations.receive_command import receive_commands
from lapse_common.clock import ManualClock
from lapse_common.command_signing import CommandSigner, CommandVerifier
from lapse_common.pb.lapse.v1 import commands_pb2, common_pb2, events_pb2

from services.agent.tests.agent_commands import AGENT_ID, INTEGRATION_ID, CommandFactory
from services.agent.tests.in_memory_connector import InMemoryConnector

GRANT = common_pb2.COMMAND_KIND_GRANT
REVOKE = common_pb2.COMMAND_KIND_REVOKE
SUCCEEDED = events_pb2.RESULT_OUTCOME_SUCCEEDED
FAILED_TRANSIENT = events_pb2.RESULT_OUTCOME_FAILED_TRANSIENT
REJECTED = events_pb2.RESULT_OUTCOME_REJECTED


class GatedConnector(InMemoryConnector):
    """Grants wait at a gate, so a test can see how many run at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.running = 0
        self.most_at_once = 0
        self.three_running = asyncio.Event()

    async def grant(self, access: Access) -> Change:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        if self.running == 3:
            self.three_running.set()
        try:
            await self.gate.wait()
            return await super().grant(access)
        finally:
            self.running -= 1


async def run_batch(
    commands: list[commands_pb2.AgentCommand],
    target: InMemoryConnector,
    ledger: CommandLedger,
    clock: ManualClock,
    *,
    limit: int = 4,
) -> list[events_pb2.AgentResult]:
    return await execute_commands(
        commands=commands,
        agent_id=AGENT_ID,
        connectors={INTEGRATION_ID: target},
        principal_rules={},
        ledger=ledger,
        clock=clock,
        limits={INTEGRATION_ID: asyncio.Semaphore(limit)},
    )


async def test_commands_for_different_grants_run_at_once_up_to_the_limit(
    make_command: CommandFactory, ledger: CommandLedger, clock: ManualClock
) -> None:
    target = GatedConnector()
    commands = [
        make_command(kind=GRANT, grant_id=f"g-{n}", principal=f"user{n}") for n in range(10)
    ]
    batch = asyncio.create_task(run_batch(commands, target, ledger, clock, limit=3))
    await asyncio.wait_for(target.three_running.wait(), timeout=10)
    for _ in range(50):  # turns of the loop for a fourth to start, were the limit not kept
        await asyncio.sleep(0)
    assert target.running == 3
    target.gate.set()
    results = await batch
    assert target.most_at_once == 3
    assert [result.command_id for result in results] == [c.command_id for c in commands]
    assert all(result.outcome == SUCCEEDED and result.changed for result in results)
    assert {access.principal for access in target.held} == {f"user{n}" for n in range(10)}


async def test_one_grants_commands_run_in_offset_order(
    make_command: CommandFactory, ledger: CommandLedger, clock: ManualClock
) -> None:
    target = InMemoryConnector()
    grant = make_command(kind=GRANT, grant_id="g-1", epoch=1)
    revoke = make_command(kind=REVOKE, grant_id="g-1", epoch=2)
    results = await run_batch([grant, revoke], target, ledger, clock)
    assert [r.outcome for r in results] == [SUCCEEDED, SUCCEEDED]
    assert results[1].verified is True
    assert target.calls == ["grant", "revoke", "verify"]
    assert not target.held


async def test_a_late_grant_behind_a_revoke_in_the_same_batch_is_stale(
    make_command: CommandFactory, ledger: CommandLedger, clock: ManualClock
) -> None:
    target = InMemoryConnector()
    revoke = make_command(kind=REVOKE, grant_id="g-1", epoch=2)
    late_grant = make_command(kind=GRANT, grant_id="g-1", epoch=1)
    results = await run_batch([revoke, late_grant], target, ledger, clock)
    assert results[1].outcome == REJECTED
    assert results[1].detail == "stale epoch 1 < 2"
    assert "grant" not in target.calls
    assert not target.held


async def test_the_same_command_twice_in_a_batch_runs_once(
    make_command: CommandFactory, ledger: CommandLedger, clock: ManualClock
) -> None:
    target = InMemoryConnector()
    command = make_command(kind=GRANT, grant_id="g-1")
    first, repeat = await run_batch([command, command], target, ledger, clock)
    assert target.calls == ["grant"]
    assert (first.outcome, first.changed) == (SUCCEEDED, True)
    assert (repeat.outcome, repeat.changed) == (SUCCEEDED, False)
    assert repeat.detail.startswith("duplicate delivery")


async def test_a_transient_failure_is_run_again_on_redelivery_and_the_rest_is_not(
    make_command: CommandFactory, ledger: CommandLedger, clock: ManualClock
) -> None:
    class FailsForBob(InMemoryConnector):
        async def grant(self, access: Access) -> Change:
            if access.principal == "bob":
                self.calls.append("grant bob")
                raise TransientTargetError("target unreachable")
            return await super().grant(access)

    target = FailsForBob()
    alice = make_command(kind=GRANT, grant_id="g-a", principal="alice")
    bob = make_command(kind=GRANT, grant_id="g-b", principal="bob")
    first = await run_batch([alice, bob], target, ledger, clock)
    assert [r.outcome for r in first] == [SUCCEEDED, FAILED_TRANSIENT]
    # The whole batch is read again (a publish failed, say): alice's grant is answered from
    # the ledger, bob's runs again.
    again = await run_batch([alice, bob], target, ledger, clock)
    assert again[0].detail.startswith("duplicate delivery")
    assert target.calls == ["grant", "grant bob", "grant bob"]


async def test_a_forged_command_in_a_batch_is_refused_and_the_rest_runs(
    signer: CommandSigner,
    verifier: CommandVerifier,
    make_command: CommandFactory,
    ledger: CommandLedger,
    clock: ManualClock,
) -> None:
    target = InMemoryConnector()
    forged = signer.sign(make_command(kind=GRANT, grant_id="g-x", principal="mallory"))
    forged.signature = bytes(64)
    genuine = signer.sign(make_command(kind=GRANT, grant_id="g-a", principal="alice"))
    unsigned = make_command(kind=GRANT, grant_id="g-y", principal="eve")
    results = await receive_commands(
        payloads=[forged, genuine, unsigned],
        agent_id=AGENT_ID,
        verifier=verifier,
        connectors={INTEGRATION_ID: target},
        principal_rules={},
        ledger=ledger,
        clock=clock,
        limits={},
    )
    assert [r.outcome for r in results] == [REJECTED, SUCCEEDED, REJECTED]
    assert [r.grant_id for r in results] == ["g-x", "g-a", "g-y"]
    assert {access.principal for access in target.held} == {"alice"}
