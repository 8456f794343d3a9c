"""The agent's local memory of commands: the newest epoch per grant and the commands it
already carried out. A SQLite file, because it must survive restarts and redeliveries.

Why it exists: Kafka delivers at least once and the platform may re-issue a command, so
the agent must (a) never run a command older than one it has already seen for the same
grant (a late GRANT must not undo a REVOKE) and (b) answer an exact redelivery with the
first outcome instead of running it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiosqlite
from lapse_common.clock import as_utc
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS grant_epochs (
    grant_id      TEXT PRIMARY KEY,
    highest_epoch INTEGER NOT NULL,
    -- The newest epoch at which a REVOKE was admitted: a GRANT at or below it is stale
    -- even when no newer command has arrived since.
    revoked_epoch INTEGER,
    updated_at    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS executed_commands (
    command_id   TEXT PRIMARY KEY,
    grant_id     TEXT NOT NULL,
    epoch        INTEGER NOT NULL,
    kind         INTEGER NOT NULL,
    outcome      INTEGER NOT NULL,
    changed      INTEGER NOT NULL,
    verified     INTEGER NOT NULL,
    detail       TEXT NOT NULL,
    completed_at TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class CommandIdentity:
    """What the ledger keeps of a command: which one, for which grant, at which epoch."""

    command_id: str
    grant_id: str
    epoch: int
    kind: common_pb2.CommandKind.ValueType


@dataclass(frozen=True)
class RecordedResult:
    outcome: events_pb2.ResultOutcome.ValueType
    changed: bool
    verified: bool
    detail: str
    completed_at: datetime


@dataclass(frozen=True)
class Admitted:
    """Run the command."""


@dataclass(frozen=True)
class Stale:
    """A newer command for the same grant was already seen: do not run this one."""

    reason: str


@dataclass(frozen=True)
class AlreadyExecuted:
    """This exact command ran before: answer with its first result, do not run it again."""

    first: RecordedResult


Admission = Admitted | Stale | AlreadyExecuted


class CommandLedger:
    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection

    @classmethod
    async def open(cls, path: Path) -> CommandLedger:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = await aiosqlite.connect(path)
        # FULL sync: a recorded epoch must be on disk before the command runs, or a crash
        # could let an older command through after restart.
        await connection.execute("PRAGMA journal_mode=WAL")
        await connection.execute("PRAGMA synchronous=FULL")
        await connection.executescript(_SCHEMA)
        await connection.commit()
        return cls(connection)

    async def close(self) -> None:
        await self._db.close()

    async def admit(
        self,
        *,
        command_id: str,
        grant_id: str,
        epoch: int,
        kind: common_pb2.CommandKind.ValueType,
        now: datetime,
    ) -> Admission:
        """Decide whether a verified command may run, and remember its epoch if so."""
        identity = CommandIdentity(command_id=command_id, grant_id=grant_id, epoch=epoch, kind=kind)
        [admission] = await self.admit_all([identity], now=now)
        return admission

    async def admit_all(
        self, commands: Sequence[CommandIdentity], *, now: datetime
    ) -> list[Admission]:
        """Decide, in the order given, whether each command may run, as if one by one:
        a command is fenced out by the epochs of those before it in the same call.

        The epochs are written, in one transaction, before any of the commands runs, so a
        crash mid-command still fences out older commands after restart. The caller passes
        each command id once (a repeat in one call would be admitted twice).
        """
        admissions = [await self._admit(command, now=now) for command in commands]
        await self._db.commit()
        return admissions

    async def _admit(self, command: CommandIdentity, *, now: datetime) -> Admission:
        # Discovery only reads the target, so it neither obeys nor moves the epoch fence.
        if command.kind != common_pb2.COMMAND_KIND_DISCOVER:
            fence = await self._fence(command.grant_id)
            if fence is not None:
                highest, revoked = fence
                if command.epoch < highest:
                    return Stale(f"stale epoch {command.epoch} < {highest}")
                if (
                    command.kind == common_pb2.COMMAND_KIND_GRANT
                    and revoked is not None
                    and command.epoch <= revoked
                ):
                    return Stale(
                        f"stale epoch: grant at epoch {command.epoch} is not newer than the "
                        f"revoke at epoch {revoked}"
                    )
        first = await self._executed(command.command_id)
        if first is not None:
            return AlreadyExecuted(first)
        if command.kind != common_pb2.COMMAND_KIND_DISCOVER:
            await self._raise_fence(command, now=now)
        return Admitted()

    async def record(
        self,
        *,
        command_id: str,
        grant_id: str,
        epoch: int,
        kind: common_pb2.CommandKind.ValueType,
        result: RecordedResult,
    ) -> None:
        identity = CommandIdentity(command_id=command_id, grant_id=grant_id, epoch=epoch, kind=kind)
        await self.record_all([(identity, result)])

    async def record_all(self, outcomes: Sequence[tuple[CommandIdentity, RecordedResult]]) -> None:
        """Remember what the commands did, in one transaction (one sync to disk)."""
        await self._db.executemany(
            "INSERT OR REPLACE INTO executed_commands"
            " (command_id, grant_id, epoch, kind, outcome, changed, verified, detail,"
            "  completed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    command.command_id,
                    command.grant_id,
                    command.epoch,
                    int(command.kind),
                    int(result.outcome),
                    int(result.changed),
                    int(result.verified),
                    result.detail,
                    _timestamp(result.completed_at),
                )
                for command, result in outcomes
            ],
        )
        await self._db.commit()

    async def highest_epoch(self, grant_id: str) -> int | None:
        fence = await self._fence(grant_id)
        return None if fence is None else fence[0]

    async def prune(self, *, older_than: datetime) -> int:
        """Forget rows older than any command could still be valid; returns rows removed."""
        cutoff = _timestamp(older_than)
        removed = 0
        for statement in (
            "DELETE FROM executed_commands WHERE completed_at < ?",
            "DELETE FROM grant_epochs WHERE updated_at < ?",
        ):
            cursor = await self._db.execute(statement, (cutoff,))
            removed += cursor.rowcount
        await self._db.commit()
        return removed

    async def _fence(self, grant_id: str) -> tuple[int, int | None] | None:
        async with self._db.execute(
            "SELECT highest_epoch, revoked_epoch FROM grant_epochs WHERE grant_id = ?",
            (grant_id,),
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else (int(row[0]), None if row[1] is None else int(row[1]))

    async def _raise_fence(self, command: CommandIdentity, *, now: datetime) -> None:
        revoked = command.epoch if command.kind == common_pb2.COMMAND_KIND_REVOKE else None
        await self._db.execute(
            "INSERT INTO grant_epochs (grant_id, highest_epoch, revoked_epoch, updated_at)"
            " VALUES (?, ?, ?, ?)"
            " ON CONFLICT (grant_id) DO UPDATE SET"
            "   highest_epoch = max(highest_epoch, excluded.highest_epoch),"
            "   revoked_epoch = CASE"
            "     WHEN excluded.revoked_epoch IS NULL THEN revoked_epoch"
            "     WHEN revoked_epoch IS NULL THEN excluded.revoked_epoch"
            "     ELSE max(revoked_epoch, excluded.revoked_epoch) END,"
            "   updated_at = excluded.updated_at",
            (command.grant_id, command.epoch, revoked, _timestamp(now)),
        )

    async def _executed(self, command_id: str) -> RecordedResult | None:
        async with self._db.execute(
            "SELECT outcome, changed, verified, detail, completed_at"
            " FROM executed_commands WHERE command_id = ?",
            (command_id,),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        return RecordedResult(
            outcome=events_pb2.ResultOutcome.ValueType(row[0]),
            changed=bool(row[1]),
            verified=bool(row[2]),
            detail=str(row[3]),
            completed_at=datetime.fromisoformat(str(row[4])),
        )


def _timestamp(moment: datetime) -> str:
    # One fixed width, so SQLite's text comparison orders timestamps correctly.
    return as_utc(moment).isoformat(timespec="microseconds")
