"""The Celery peer: a task that runs `revoke_and_verify`, sent with `countdown` so that it
runs at the grant's expiry, through a Redis broker (deploy/local/redis.sh).

    python -m celery -A benchmarks.peers.celery_peer worker     # the worker (its own process)
    python -m benchmarks.peers.celery_peer                      # the producer: grants on stdin

The broker is `LAPSE_REDIS_URL`; the task's target is `LAPSE_PEER_TARGET_DSN`. Everything
else is Celery's default: prefork pool with one process per core, acks before the task runs
(acks_late off), no result backend, and the Redis transport's visibility timeout of one hour,
after which a message that was taken but never acknowledged is delivered again. A countdown
task is taken from the queue at once and held by the worker until it is due, so those are
the ones a killed worker leaves unacknowledged in Redis.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery
from celery.signals import worker_ready

from benchmarks.peers.revoke_job import revoke_and_verify
from benchmarks.peers.runners import REDIS_URL_VARIABLE
from benchmarks.peers.schedule_lines import say, serve
from benchmarks.peers.target import Grant

app = Celery("peer_bench", broker=os.environ.get(REDIS_URL_VARIABLE), set_as_current=True)


@app.task(name="peer_bench.revoke")  # type: ignore[untyped-decorator]
def revoke(grant_id: int, role: str, member: str) -> bool:
    return revoke_and_verify(grant_id, role, member)


@worker_ready.connect  # type: ignore[untyped-decorator]
def _say_ready(**_: Any) -> None:
    say("ready")


def produce() -> int:
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=3)
    say("ready")

    def schedule(grant: Grant) -> None:
        revoke.apply_async(
            args=(grant.id, grant.role, grant.member),
            countdown=max(0.0, grant.expires_at - time.time()),
        )

    return serve(schedule)


if __name__ == "__main__":
    produce()
