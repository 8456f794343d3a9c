"""The job both peers run when a grant falls due: REVOKE, then read the target back.

It runs inside the peer's own processes (an APScheduler executor thread, a Celery pool
process), so it takes plain arguments and reads its target from the environment the
benchmark gave that process (`LAPSE_PEER_TARGET_DSN`).

Every execution is recorded in the target's `executions` table in the same transaction as
its REVOKE, so "ran twice" counts REVOKEs that really committed; the read-back after the
commit stamps the row with the time it saw the membership gone (`verified_at`) and whether
it did (`still_member`). A kill -9 between the commit and the read-back leaves a row without
`verified_at`: that grant was revoked but never verified, as a real crash would leave it.
"""

from __future__ import annotations

import os
import threading

import psycopg
from psycopg import sql

TARGET_DSN_VARIABLE = "LAPSE_PEER_TARGET_DSN"

_RECORD_EXECUTION = "INSERT INTO executions (grant_id, pid) VALUES (%s, %s) RETURNING id"
# The read-back: direct membership from pg_auth_members, as Lapse's PostgreSQL connector
# reads it (pg_has_role would also be true through other paths).
_VERIFY = """
UPDATE executions
   SET verified_at = extract(epoch FROM clock_timestamp()),
       still_member = EXISTS (
           SELECT 1
             FROM pg_auth_members m
             JOIN pg_roles granted ON granted.oid = m.roleid
             JOIN pg_roles member ON member.oid = m.member
            WHERE granted.rolname = %s AND member.rolname = %s)
 WHERE id = %s
RETURNING NOT still_member
"""
_RECORD_MISFIRE = "INSERT INTO misfires (grant_id) VALUES (%s)"
_RECORD_ERROR = "INSERT INTO errors (grant_id, error) VALUES (%s, %s)"

# One connection per thread (APScheduler's pool runs jobs on ten threads) and so per process
# (Celery's pool processes each have their own after the fork).
_local = threading.local()


def _connection() -> psycopg.Connection[tuple[object, ...]]:
    conn: psycopg.Connection[tuple[object, ...]] | None = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = psycopg.connect(os.environ[TARGET_DSN_VARIABLE], autocommit=True)
        _local.conn = conn
    return conn


def _forget_connection() -> None:
    conn = getattr(_local, "conn", None)
    _local.conn = None
    if conn is not None:
        conn.close()


def revoke_and_verify(grant_id: int, role: str, member: str) -> bool:
    """Revoke `role` from `member` and read it back; True when the membership is gone."""
    try:
        conn = _connection()
        revoke = sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(role), sql.Identifier(member))
        with conn.transaction():
            conn.execute(revoke)
            row = conn.execute(_RECORD_EXECUTION, (grant_id, os.getpid())).fetchone()
        assert row is not None
        verified = conn.execute(_VERIFY, (role, member, row[0])).fetchone()
    except psycopg.Error as error:
        # The peer's own error handling (APScheduler logs it, Celery marks the task failed)
        # still sees the exception; the row only lets the benchmark count it.
        _forget_connection()
        record_error(grant_id, error)
        raise
    return bool(verified and verified[0])


def record_misfire(grant_id: int) -> None:
    """The peer skipped this grant's job as a misfire (APScheduler's EVENT_JOB_MISSED)."""
    _connection().execute(_RECORD_MISFIRE, (grant_id,))


def record_error(grant_id: int, error: BaseException) -> None:
    try:
        _connection().execute(_RECORD_ERROR, (grant_id, f"{type(error).__name__}: {error}"))
    except psycopg.Error:
        _forget_connection()
