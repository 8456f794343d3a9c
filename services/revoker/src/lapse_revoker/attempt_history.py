"""A revocation's attempts as the protobuf history shown to operators and dead letters."""

from __future__ import annotations

from lapse_common.clock import as_utc
from lapse_common.pb.lapse.v1 import events_pb2

from lapse_revoker.models import RevokeAttemptRecord


def attempts_of(
    attempts: list[RevokeAttemptRecord],
) -> list[events_pb2.RevokeAttempt]:
    rendered = []
    for row in sorted(attempts, key=lambda a: (a.epoch, a.attempt)):
        attempt = events_pb2.RevokeAttempt(attempt=row.attempt, error=row.error)
        attempt.sent_at.FromDatetime(as_utc(row.sent_at))
        if row.finished_at is not None:
            attempt.finished_at.FromDatetime(as_utc(row.finished_at))
        rendered.append(attempt)
    return rendered
