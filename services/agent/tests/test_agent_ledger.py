"""Epoch fencing and duplicate detection, against a real SQLite file."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

from lapse_agent.ledger import Admitted, AlreadyExecuted, CommandLedger, RecordedResult, Stale
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2

GRANT = common_pb2.COMMAND_KIND_GRANT
REVOKE = common_pb2.COMMAND_KIND_REVOKE
DISCOVER = common_pb2.COMMAND_KIND_DISCOVER
NOW = datetime(2030, 1, 1, tzinfo=UTC)


async def admit(
    ledger: CommandLedger, command_id: str, *, epoch: int, kind: int = GRANT, grant: str = "g1"
) -> Admitted | Stale | AlreadyExecuted:
    return await ledger.admit(
        command_id=command_id,
        grant_id=grant,
        epoch=epoch,
        kind=common_pb2.CommandKind.ValueType(kind),
        now=NOW,
    )


def succeeded(detail: str = "granted demo_read to alice") -> RecordedResult:
    return RecordedResult(
        outcome=events_pb2.RESULT_OUTCOME_SUCCEEDED,
        changed=True,
        verified=False,
        detail=detail,
        completed_at=NOW,
    )


async def test_first_command_is_admitted_and_its_epoch_remembered(ledger: CommandLedger) -> None:
    assert isinstance(await admit(ledger, "c1", epoch=1), Admitted)
    assert await ledger.highest_epoch("g1") == 1
    assert await ledger.highest_epoch("other") is None


async def test_revoke_with_a_newer_epoch_follows_a_grant(ledger: CommandLedger) -> None:
    assert isinstance(await admit(ledger, "grant", epoch=1), Admitted)
    assert isinstance(await admit(ledger, "revoke", epoch=2, kind=REVOKE), Admitted)
    assert await ledger.highest_epoch("g1") == 2


async def test_a_grant_arriving_after_a_newer_revoke_is_stale(ledger: CommandLedger) -> None:
    assert isinstance(await admit(ledger, "revoke", epoch=2, kind=REVOKE), Admitted)
    late = await admit(ledger, "grant", epoch=1)
    assert isinstance(late, Stale)
    assert late.reason == "stale epoch 1 < 2"


async def test_a_grant_at_the_same_epoch_as_a_revoke_is_stale(ledger: CommandLedger) -> None:
    # The revoke decision was made at that epoch; a grant there cannot be newer than it.
    assert isinstance(await admit(ledger, "revoke", epoch=3, kind=REVOKE), Admitted)
    tie = await admit(ledger, "grant", epoch=3)
    assert isinstance(tie, Stale)
    assert "not newer than the revoke at epoch 3" in tie.reason
    # A revoke retry at the same epoch is fine.
    assert isinstance(await admit(ledger, "revoke-retry", epoch=3, kind=REVOKE), Admitted)


async def test_a_newer_grant_after_a_revoke_is_admitted(ledger: CommandLedger) -> None:
    assert isinstance(await admit(ledger, "revoke", epoch=2, kind=REVOKE), Admitted)
    assert isinstance(await admit(ledger, "regrant", epoch=3), Admitted)


async def test_epochs_are_per_grant(ledger: CommandLedger) -> None:
    assert isinstance(await admit(ledger, "a", epoch=5, grant="g1"), Admitted)
    assert isinstance(await admit(ledger, "b", epoch=1, grant="g2"), Admitted)


async def test_an_executed_command_is_answered_with_its_first_result(
    ledger: CommandLedger,
) -> None:
    assert isinstance(await admit(ledger, "c1", epoch=1), Admitted)
    await ledger.record(command_id="c1", grant_id="g1", epoch=1, kind=GRANT, result=succeeded())
    again = await admit(ledger, "c1", epoch=1)
    assert isinstance(again, AlreadyExecuted)
    assert again.first == succeeded()


async def test_an_unrecorded_command_may_run_again(ledger: CommandLedger) -> None:
    # Admitted but never recorded (a transient failure, or a crash mid-command).
    assert isinstance(await admit(ledger, "c1", epoch=1), Admitted)
    assert isinstance(await admit(ledger, "c1", epoch=1), Admitted)


async def test_a_stale_duplicate_is_reported_stale(ledger: CommandLedger) -> None:
    assert isinstance(await admit(ledger, "grant", epoch=1), Admitted)
    await ledger.record(command_id="grant", grant_id="g1", epoch=1, kind=GRANT, result=succeeded())
    assert isinstance(await admit(ledger, "revoke", epoch=2, kind=REVOKE), Admitted)
    assert isinstance(await admit(ledger, "grant", epoch=1), Stale)


async def test_discovery_neither_obeys_nor_moves_the_fence(ledger: CommandLedger) -> None:
    assert isinstance(await admit(ledger, "revoke", epoch=4, kind=REVOKE), Admitted)
    assert isinstance(await admit(ledger, "discover", epoch=0, kind=DISCOVER), Admitted)
    assert isinstance(await admit(ledger, "discover-later", epoch=9, kind=DISCOVER), Admitted)
    assert await ledger.highest_epoch("g1") == 4


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    first = await CommandLedger.open(path)
    assert isinstance(await admit(first, "revoke", epoch=2, kind=REVOKE), Admitted)
    await first.record(command_id="revoke", grant_id="g1", epoch=2, kind=REVOKE, result=succeeded())
    await first.close()

    reopened = await CommandLedger.open(path)
    try:
        assert isinstance(await admit(reopened, "grant", epoch=1), Stale)
        assert isinstance(await admit(reopened, "revoke", epoch=2, kind=REVOKE), AlreadyExecuted)
    finally:
        await reopened.close()


async def test_prune_forgets_only_old_rows(ledger: CommandLedger) -> None:
    assert isinstance(await admit(ledger, "c1", epoch=1), Admitted)
    await ledger.record(command_id="c1", grant_id="g1", epoch=1, kind=GRANT, result=succeeded())
    assert await ledger.prune(older_than=NOW - timedelta(days=1)) == 0
    assert await ledger.prune(older_than=NOW + timedelta(seconds=1)) == 2
    assert await ledger.highest_epoch("g1") is None
    assert isinstance(await admit(ledger, "c1", epoch=1), Admitted)
