"""A throwaway target for one peer run: its own database, login and roles on the running
PostgreSQL, dropped again when the run ends.

`Target.create(admin_dsn, count)` makes, as the cluster's superuser:
- a login `peer_bench_<run>_agent` (CREATEROLE) that owns the database `peer_bench_<run>`
  and is what the peers connect as, for their job stores and for the REVOKEs;
- `count` group roles `peer_bench_<run>_r<i>` and `count` users `peer_bench_<run>_u<i>`,
  user i a member of role i, granted by the agent login (so that on PostgreSQL 16+, where a
  REVOKE removes only the revoker's own grants, the agent can take them away again). Users
  are NOLOGIN: nothing in the job needs them to log in, and the local cluster trusts every
  loopback login;
- the tables the benchmark reads: `grants` (which role, which user, when it is due),
  `executions` (one row per committed REVOKE, stamped by its read-back), `misfires`, `errors`.

Roles are cluster-wide, so every name carries the run's id; `drop_leftovers` removes what a
killed run left (every database and role named `peer_bench_*`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

PREFIX = "peer_bench_"
# Role DDL locks one object per role; a transaction per batch stays far below the lock
# table's size (max_locks_per_transaction x max_connections).
_DDL_BATCH = 1000

_SCHEMA = """
CREATE TABLE grants (
    id          integer PRIMARY KEY,
    role        text NOT NULL,
    member      text NOT NULL,
    expires_at  double precision NOT NULL
);
CREATE TABLE executions (
    id            bigserial PRIMARY KEY,
    grant_id      integer NOT NULL,
    pid           integer NOT NULL,
    committed_at  double precision NOT NULL DEFAULT extract(epoch FROM clock_timestamp()),
    verified_at   double precision,
    still_member  boolean
);
CREATE INDEX executions_grant ON executions (grant_id);
CREATE TABLE misfires (
    grant_id  integer NOT NULL,
    at        double precision NOT NULL DEFAULT extract(epoch FROM clock_timestamp())
);
CREATE TABLE errors (
    grant_id  integer NOT NULL,
    at        double precision NOT NULL DEFAULT extract(epoch FROM clock_timestamp()),
    error     text NOT NULL
);
CREATE SCHEMA apscheduler;
"""

_MEMBERSHIP = """
EXISTS (SELECT 1
          FROM pg_auth_members m
          JOIN pg_roles granted ON granted.oid = m.roleid
          JOIN pg_roles member ON member.oid = m.member
         WHERE granted.rolname = g.role AND member.rolname = g.member)
"""

_OUTCOMES = f"""
SELECT g.id, g.expires_at,
       min(e.verified_at) FILTER (WHERE NOT e.still_member) AS verified_at,
       count(e.id) AS executions,
       EXISTS (SELECT 1 FROM misfires f WHERE f.grant_id = g.id) AS misfired,
       EXISTS (SELECT 1 FROM errors r WHERE r.grant_id = g.id) AS failed,
       {_MEMBERSHIP} AS still_member
  FROM grants g
  LEFT JOIN executions e ON e.grant_id = g.id
 GROUP BY g.id
 ORDER BY g.expires_at, g.id
"""

_SETTLED = """
SELECT (SELECT count(DISTINCT grant_id) FROM executions
         WHERE verified_at IS NOT NULL AND NOT still_member)
     + (SELECT count(DISTINCT f.grant_id) FROM misfires f
         WHERE NOT EXISTS (SELECT 1 FROM executions e
                            WHERE e.grant_id = f.grant_id AND NOT e.still_member))
"""


@dataclass(frozen=True)
class Grant:
    id: int
    role: str
    member: str
    expires_at: float


@dataclass(frozen=True)
class Outcome:
    """What became of one grant, read from the target after the run."""

    grant: Grant
    verified_at: float | None
    executions: int
    misfired: bool
    failed: bool
    still_member: bool

    @property
    def lateness(self) -> float | None:
        return None if self.verified_at is None else self.verified_at - self.grant.expires_at


def _with_database(dsn: str, database: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, dbname=database)


class Target:
    def __init__(self, *, admin_dsn: str, run_id: str, count: int) -> None:
        self.admin_dsn = admin_dsn
        self.run_id = run_id
        self.count = count
        self.database = f"{PREFIX}{run_id}"
        self.agent = f"{PREFIX}{run_id}_agent"
        self._agent_password = secrets.token_hex(16)
        self._reader: psycopg.Connection[TupleRow] | None = None

    # -- names and addresses -------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """libpq DSN of the agent login on the throwaway database."""
        return psycopg.conninfo.make_conninfo(
            self.admin_dsn, dbname=self.database, user=self.agent, password=self._agent_password
        )

    @property
    def sqlalchemy_url(self) -> str:
        info = psycopg.conninfo.conninfo_to_dict(self.dsn)
        host = info.get("host", "127.0.0.1")
        port = info.get("port", "5432")
        return (
            f"postgresql+psycopg://{self.agent}:{self._agent_password}"
            f"@{host}:{port}/{self.database}"
        )

    def role(self, index: int) -> str:
        return f"{PREFIX}{self.run_id}_r{index:06d}"

    def member(self, index: int) -> str:
        return f"{PREFIX}{self.run_id}_u{index:06d}"

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    def create(cls, admin_dsn: str, count: int) -> Target:
        target = cls(admin_dsn=admin_dsn, run_id=secrets.token_hex(4), count=count)
        try:
            target._create()
        except BaseException:
            target.drop()
            raise
        return target

    def _create(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(
                    sql.Identifier(self.agent), sql.Literal(self._agent_password)
                )
            )
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(self.database), sql.Identifier(self.agent)
                )
            )
        with psycopg.connect(self.dsn, autocommit=True) as agent:
            agent.execute(_SCHEMA)
            # Server-side loops: three statements per grant, one round trip per batch.
            names = sql.Literal(f"{PREFIX}{self.run_id}").as_string(agent)
            for low, high in _batches(self.count):
                body = f"""
                DECLARE role text; member text;
                BEGIN
                  FOR i IN {low}..{high - 1} LOOP
                    role := {names} || '_r' || lpad(i::text, 6, '0');
                    member := {names} || '_u' || lpad(i::text, 6, '0');
                    EXECUTE format('CREATE ROLE %I NOLOGIN', role);
                    EXECUTE format('CREATE ROLE %I NOLOGIN', member);
                    EXECUTE format('GRANT %I TO %I', role, member);
                  END LOOP;
                END"""
                agent.execute(sql.SQL("DO {}").format(sql.Literal(body)))

    def place(self, expiries: Sequence[float]) -> list[Grant]:
        """Give grant i (i < count) the expiry time `expiries[i]` (epoch seconds)."""
        grants = [
            Grant(id=index, role=self.role(index), member=self.member(index), expires_at=at)
            for index, at in enumerate(expiries)
        ]
        with psycopg.connect(self.dsn) as conn, conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO grants (id, role, member, expires_at) VALUES (%s, %s, %s, %s)",
                [(g.id, g.role, g.member, g.expires_at) for g in grants],
            )
        return grants

    def drop(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        drop_everything(self.admin_dsn, run_id=self.run_id)

    # -- reading back --------------------------------------------------------------------

    def _read(self) -> psycopg.Connection[TupleRow]:
        if self._reader is None or self._reader.closed:
            self._reader = psycopg.connect(self.dsn, autocommit=True)
        return self._reader

    def settled(self) -> int:
        """Grants verified revoked or skipped as a misfire so far."""
        row = self._read().execute(_SETTLED).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def wait_settled(self, *, until: float, stall: float, poll: float = 0.5) -> int:
        """Wait until every grant is settled, or nothing has moved for `stall` seconds past
        `until` (the last due time), whichever comes first."""
        last, moved = -1, time.time()
        while True:
            done = self.settled()
            now = time.time()
            if done != last:
                last, moved = done, now
            if done >= self.count or (now > until and now - max(moved, until) > stall):
                return done
            time.sleep(poll)

    def outcomes(self) -> list[Outcome]:
        rows = self._read().execute(_OUTCOMES).fetchall()
        return [
            Outcome(
                grant=Grant(
                    id=int(row[0]),
                    role=self.role(int(row[0])),
                    member=self.member(int(row[0])),
                    expires_at=float(row[1]),
                ),
                verified_at=None if row[2] is None else float(row[2]),
                executions=int(row[3]),
                misfired=bool(row[4]),
                failed=bool(row[5]),
                still_member=bool(row[6]),
            )
            for row in rows
        ]

    def backend_pids(self) -> list[int]:
        """PostgreSQL backends serving the peers on this database (not the benchmark's own)."""
        rows = (
            self._read()
            .execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.database,),
            )
            .fetchall()
        )
        return [int(row[0]) for row in rows]


def _batches(count: int) -> Iterator[tuple[int, int]]:
    for low in range(0, count, _DDL_BATCH):
        yield low, min(count, low + _DDL_BATCH)


def drop_everything(admin_dsn: str, *, run_id: str = "") -> list[str]:
    """Drop the database and roles of one run, or of every run when `run_id` is empty.
    Returns what it dropped (the database names)."""
    like = (PREFIX + run_id).replace("_", r"\_") + "%"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        databases = [
            str(row[0])
            for row in admin.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (like,)
            ).fetchall()
        ]
        for database in databases:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
        # Members and group roles first, the agents (the grantors) last.
        roles = [
            str(row[0])
            for row in admin.execute(
                "SELECT rolname FROM pg_roles WHERE rolname LIKE %s"
                " ORDER BY rolname LIKE '%%agent'",
                (like,),
            ).fetchall()
        ]
        for start in range(0, len(roles), _DDL_BATCH):
            with admin.transaction():
                for role in roles[start : start + _DDL_BATCH]:
                    admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    return databases
