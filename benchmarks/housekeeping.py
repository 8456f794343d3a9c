"""What pruning the outbox and inbox costs, and whether the service's own writes feel it.

Loads a throwaway PostgreSQL schema with `--rows` outbox rows published and `--rows` inbox
ids handled longer ago than their retention (plus a tenth as many recent ones, and pending
and set-aside outbox rows, which must stay), then runs one housekeeping pass with the
service's settings (LAPSE_HOUSEKEEPING_*) while a writer commits single-row inserts, one
outbox row or one inbox id per transaction, as the relay's producers and the consumers do.
Then a few rounds of steady traffic: each round the clock moves past both retentions, a pass
prunes the last round's rows, VACUUM runs (what autovacuum does in a running system) and the
round's new rows arrive; the tables' sizes show whether the space is reused.

    uv run python benchmarks/housekeeping.py [--rows 200000] [--rounds 3]

Needs only PostgreSQL (LAPSE_TEST_DATABASE_URL, else the one deploy/local/postgres.sh runs).
Prints figures; asserts nothing. The schema is dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from lapse_common.clock import ManualClock
from lapse_common.db import Base, create_engine_for_service, create_schema, session_factory
from lapse_common.messaging.housekeeping import Housekeeping
from lapse_common.messaging.inbox import first_delivery
from lapse_common.messaging.outbox import OutboxMessage
from lapse_common.settings import HousekeepingSettings
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

LOCAL_DATABASE = "postgresql+asyncpg://lapse:lapse@127.0.0.1:55432/lapse_test"
# About what a grant fact's envelope and headers take.
VALUE_BYTES = 400
HEADERS = (
    '{"lapse-type": "lapse.v1.GrantStatusChanged", '
    '"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'
)


async def load(
    engine: AsyncEngine,
    schema: str,
    *,
    rows: int,
    published_at: datetime | None,
    handled_at: datetime | None,
    set_aside: bool = False,
) -> None:
    """Bulk rows straight in SQL (each row's time a few ms apart, oldest first)."""
    salt = uuid.uuid4().hex
    async with engine.begin() as connection:
        if published_at is not None or set_aside:
            moment = published_at or datetime.now(UTC)
            await connection.execute(
                text(
                    f'INSERT INTO "{schema}".outbox (event_id, topic, key, value, headers_json, '
                    "created_at, published_at, set_aside_at, set_aside_reason) "
                    "SELECT md5(:salt || g), 'lapse.grants.v1', 'grant-' || g, "
                    "convert_to(repeat('x', :size), 'UTF8'), :headers, "
                    "t, CASE WHEN :aside THEN NULL ELSE t END, "
                    "CASE WHEN :aside THEN t END, CASE WHEN :aside THEN 'RecordTooLargeError' END "
                    "FROM generate_series(1, :n) g, LATERAL "
                    "(SELECT CAST(:at AS timestamptz) - make_interval(secs => (:n - g) * 0.005)) "
                    "AS m(t)"
                ),
                {
                    "salt": salt,
                    "size": VALUE_BYTES,
                    "headers": HEADERS,
                    "aside": set_aside,
                    "n": rows,
                    "at": moment,
                },
            )
        if handled_at is not None:
            await connection.execute(
                text(
                    f'INSERT INTO "{schema}".inbox (consumer, event_id, handled_at) '
                    "SELECT 'lapse-revoker.' || (g % 6), md5(:salt || g), "
                    "CAST(:at AS timestamptz) - make_interval(secs => (:n - g) * 0.005) "
                    "FROM generate_series(1, :n) g"
                ),
                {"salt": salt, "n": rows, "at": handled_at},
            )


async def sizes(engine: AsyncEngine, schema: str) -> dict[str, tuple[int, float]]:
    """Rows and total size (heap, indexes, TOAST) in MB of each table."""
    found = {}
    async with engine.connect() as connection:
        for table in ("outbox", "inbox"):
            count = (
                await connection.execute(text(f'SELECT count(*) FROM "{schema}".{table}'))
            ).scalar_one()
            size = (
                await connection.execute(
                    text("SELECT pg_total_relation_size(CAST(:t AS regclass))"),
                    {"t": f'"{schema}".{table}'},
                )
            ).scalar_one()
            found[table] = (int(count), size / 1e6)
    return found


def describe_sizes(label: str, found: dict[str, tuple[int, float]]) -> str:
    return f"{label:<32} " + "  ".join(
        f"{table} {rows:>8,} rows {mb:7.1f} MB" for table, (rows, mb) in found.items()
    )


async def vacuum(engine: AsyncEngine, schema: str) -> None:
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        for table in ("outbox", "inbox"):
            await autocommit.execute(text(f'VACUUM ANALYZE "{schema}".{table}'))


async def write_one(sessions: async_sessionmaker[AsyncSession], clock: ManualClock, n: int) -> None:
    """One single-row transaction: an outbox row (as enqueue stages) or an inbox id."""
    async with sessions() as session, session.begin():
        if n % 2:
            await first_delivery(
                session, consumer="lapse-writer", event_id=uuid.uuid4().hex, now=clock.now()
            )
        else:
            session.add(
                OutboxMessage(
                    event_id=uuid.uuid4().hex,
                    topic="lapse.grants.v1",
                    key="writer",
                    value=b"x" * VALUE_BYTES,
                    headers_json=HEADERS,
                    created_at=clock.now(),
                )
            )


async def writer(
    sessions: async_sessionmaker[AsyncSession],
    clock: ManualClock,
    until: asyncio.Future[Any] | None,
    *,
    count: int = 0,
) -> list[float]:
    """Seconds each write took, written every 5 ms until `until` is done (or `count` times)."""
    waits: list[float] = []
    n = 0
    while (until is not None and not until.done()) or (until is None and n < count):
        started = time.perf_counter()
        await write_one(sessions, clock, n)
        waits.append(time.perf_counter() - started)
        n += 1
        await asyncio.sleep(0.005)
    return waits


def describe_waits(waits: list[float]) -> str:
    ordered = sorted(waits)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"{len(waits):>5} writes  p50 {statistics.median(ordered) * 1e3:6.2f} ms  "
        f"p99 {p99 * 1e3:6.2f} ms  worst {ordered[-1] * 1e3:6.2f} ms"
    )


def time_deletes(engine: AsyncEngine) -> list[float]:
    """Seconds each DELETE statement took in the database, from now on."""
    took: list[float] = []

    def before(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            conn.info["delete_started"] = time.perf_counter()

    def after(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            took.append(time.perf_counter() - conn.info.pop("delete_started"))

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    event.listen(engine.sync_engine, "after_cursor_execute", after)
    return took


async def run(args: argparse.Namespace) -> None:
    settings = HousekeepingSettings()
    schema = f"housekeeping_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine_for_service(args.database_url, schema=schema)
    sessions = session_factory(engine)
    now = datetime.now(UTC).replace(microsecond=0)
    clock = ManualClock(now)
    outbox_retention = timedelta(seconds=settings.outbox_retention_seconds)
    inbox_retention = timedelta(seconds=settings.inbox_retention_seconds)
    try:
        await create_schema(engine, schema=schema, metadatas=[Base.metadata])
        async with engine.connect() as connection:
            version = (await connection.execute(text("SHOW server_version"))).scalar_one()
        print(
            f"PostgreSQL {version}, {os.cpu_count()} CPUs; batch {settings.batch_size} rows, "
            f"pause {settings.batch_pause_seconds * 1e3:.0f} ms, retention outbox "
            f"{outbox_retention / timedelta(hours=1):g} h, inbox "
            f"{inbox_retention / timedelta(days=1):g} days"
        )
        recent = args.rows // 10
        started = time.perf_counter()
        await load(
            engine,
            schema,
            rows=args.rows,
            published_at=now - outbox_retention - timedelta(hours=1),
            handled_at=now - inbox_retention - timedelta(hours=1),
        )
        await load(
            engine,
            schema,
            rows=recent,
            published_at=now - outbox_retention / 2,
            handled_at=now - inbox_retention / 2,
        )
        await load(engine, schema, rows=100, published_at=None, handled_at=None, set_aside=True)
        for n in range(100):  # outbox rows still pending
            await write_one(sessions, clock, 2 * n)
        await vacuum(engine, schema)
        print(f"loaded in {time.perf_counter() - started:.1f} s")
        print(describe_sizes("before pruning", await sizes(engine, schema)))

        idle = await writer(sessions, clock, None, count=400)
        print(f"{'writes, nothing pruning':<33}{describe_waits(idle)}")

        deletes = time_deletes(engine)
        keeper = Housekeeping(sessions=sessions, clock=clock, settings=settings)
        started = time.perf_counter()
        pruning = asyncio.ensure_future(keeper.prune_once())
        during = await writer(sessions, clock, pruning)
        pruned = await pruning
        elapsed = time.perf_counter() - started
        deleted = pruned.outbox_rows + pruned.inbox_ids
        in_statements = sum(deletes)
        print(f"{'writes, while pruning':<33}{describe_waits(during)}")
        print(
            f"pruned {pruned.outbox_rows:,} outbox rows + {pruned.inbox_ids:,} inbox ids in "
            f"{pruned.statements} statements, {elapsed:.1f} s: {deleted / elapsed:,.0f} rows/s "
            f"with the pauses, {deleted / in_statements:,.0f} rows/s of statement time; "
            f"per statement p50 {statistics.median(deletes) * 1e3:.1f} ms, "
            f"worst {max(deletes) * 1e3:.1f} ms"
        )
        print(describe_sizes("after pruning", await sizes(engine, schema)))
        async with engine.connect() as connection:
            pending, aside = (
                await connection.execute(
                    text(
                        "SELECT count(*) FILTER (WHERE set_aside_at IS NULL), "
                        f'count(*) FILTER (WHERE set_aside_at IS NOT NULL) FROM "{schema}".outbox '
                        "WHERE published_at IS NULL"
                    )
                )
            ).one()
        print(f"kept: {pending} pending and {aside} set-aside outbox rows")
        await vacuum(engine, schema)
        print(describe_sizes("after VACUUM", await sizes(engine, schema)))

        round_rows = args.rows // 4
        print(
            f"steady traffic: each round the clock moves past both retentions, a pass prunes "
            f"the last round's rows, VACUUM, then {round_rows:,} new rows per table"
        )
        for number in range(1, args.rounds + 1):
            clock.advance(max(outbox_retention, inbox_retention) + timedelta(minutes=1))
            started = time.perf_counter()
            pruned = await keeper.prune_once()
            took = time.perf_counter() - started
            await vacuum(engine, schema)
            await load(
                engine, schema, rows=round_rows, published_at=clock.now(), handled_at=clock.now()
            )
            print(
                describe_sizes(
                    f"round {number}: pruned {pruned.outbox_rows + pruned.inbox_ids:,} "
                    f"in {took:.1f} s",
                    await sizes(engine, schema),
                )
            )
    finally:
        async with engine.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000, help="old rows per table")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of steady traffic")
    parser.add_argument(
        "--database-url", default=os.environ.get("LAPSE_TEST_DATABASE_URL", LOCAL_DATABASE)
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
