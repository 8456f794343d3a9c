"""Async SQLAlchemy engine and sessions, one schema per service.

Models are declared without a schema; on PostgreSQL the engine maps them into the
service's own schema with `schema_translate_map`, so the same models also run on SQLite
(one file per service) for a zero-setup dev run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import MetaData, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Session


class Base(DeclarativeBase):
    """Base for tables shared by every service (outbox, inbox)."""


def is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


def create_engine_for_service(database_url: str, *, schema: str) -> AsyncEngine:
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        if url.get_driver_name() != "asyncpg":
            url = url.set(drivername="postgresql+asyncpg")
        return create_async_engine(
            url,
            pool_size=10,
            max_overflow=10,
            # No pre-ping: it costs two round trips on every checkout, a third of a typical
            # consumer transaction's. A connection broken by a database restart fails its
            # next use instead; SQLAlchemy then discards the pool's connections and the
            # message is redelivered (or the gRPC call fails once and may be retried).
            pool_pre_ping=False,
            execution_options={"schema_translate_map": {None: schema}},
        )
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            # One file per service keeps the services' data apart, as schemas do on PostgreSQL.
            path = Path(url.database)
            path = path.with_name(f"{path.stem}-{schema}{path.suffix or '.db'}")
            path.parent.mkdir(parents=True, exist_ok=True)
            url = url.set(database=str(path))
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    raise ValueError(
        f"unsupported database URL {url.render_as_string(hide_password=True)!r}: "
        "use postgresql+asyncpg://... or sqlite+aiosqlite:///..."
    )


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    # WAL lets the relay read while a handler writes; busy_timeout avoids spurious
    # "database is locked" errors between the service's own tasks.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


async def create_schema(engine: AsyncEngine, *, schema: str, metadatas: Sequence[MetaData]) -> None:
    """Create the service's schema and tables if missing (idempotent)."""
    async with engine.begin() as connection:
        if is_postgres(engine):
            # Two services starting at once may race to create their schemas.
            await connection.execute(text("SELECT pg_advisory_xact_lock(7301)"))
            await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        for metadata in metadatas:
            await connection.run_sync(metadata.create_all)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def dialect_of(session: AsyncSession) -> str:
    """'postgresql' or 'sqlite': row locking (FOR UPDATE SKIP LOCKED) exists only on the first."""
    return session.get_bind().dialect.name


def after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Call `callback` once the session's transaction has committed, and never if it rolls
    back: for waking a loop that must read what the transaction wrote (woken earlier, it
    could look before the rows are there and sleep on an old answer)."""
    settled = False

    def committed(_: Session) -> None:
        nonlocal settled
        if not settled:
            settled = True
            callback()

    def rolled_back(_: Session) -> None:
        nonlocal settled
        settled = True

    event.listen(session.sync_session, "after_commit", committed, once=True)
    event.listen(session.sync_session, "after_rollback", rolled_back, once=True)
