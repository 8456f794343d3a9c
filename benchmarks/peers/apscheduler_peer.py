"""The APScheduler peer: one process holding a BackgroundScheduler whose jobs live in a
SQLAlchemyJobStore on the target's PostgreSQL (schema `apscheduler`), as an application
that revokes access on a timer would run it.

    LAPSE_PEER_JOBSTORE_URL=postgresql+psycopg://... python -m benchmarks.peers.apscheduler_peer

Each grant becomes a `date` job (id = grant id) that runs `revoke_and_verify` at the grant's
expiry. Everything else is APScheduler's default: its thread pool of 10, misfire_grace_time
1 s, coalesce on, max_instances 1. Jobs that APScheduler skips as misfires are recorded in
the target (a listener on EVENT_JOB_MISSED), since they leave the access in place.

Grants come on stdin (`benchmarks.peers.schedule_lines`); a restarted process is given none
and runs what its job store still holds.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from benchmarks.peers.revoke_job import record_misfire, revoke_and_verify
from benchmarks.peers.runners import JOBSTORE_URL_VARIABLE
from benchmarks.peers.schedule_lines import say, serve
from benchmarks.peers.target import Grant

JOBSTORE_SCHEMA = "apscheduler"


def on_missed(event: JobExecutionEvent) -> None:
    record_misfire(int(event.job_id))


def main() -> None:
    # APScheduler logs misfires and job errors as warnings; they go to this process's log.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")

    scheduler = BackgroundScheduler(
        jobstores={
            "default": SQLAlchemyJobStore(
                url=os.environ[JOBSTORE_URL_VARIABLE], tableschema=JOBSTORE_SCHEMA
            )
        },
        timezone=UTC,
    )
    scheduler.add_listener(on_missed, EVENT_JOB_MISSED)
    scheduler.start()
    say("ready")

    def schedule(grant: Grant) -> None:
        scheduler.add_job(
            revoke_and_verify,
            trigger="date",
            run_date=datetime.fromtimestamp(grant.expires_at, UTC),
            args=(grant.id, grant.role, grant.member),
            id=str(grant.id),
        )

    serve(schedule)
    scheduler.shutdown(wait=False)


if __name__ == "__main__":
    main()
