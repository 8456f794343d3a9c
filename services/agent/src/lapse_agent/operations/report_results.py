"""Publish AgentResults, signed with the agent's key, to lapse.agent-results.v1, keyed by
grant id."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from lapse_common.agent_reports import ReportSigner
from lapse_common.clock import Clock
from lapse_common.messaging.codec import build_envelope
from lapse_common.messaging.publishing import PipelinedPublisher
from lapse_common.pb.lapse.v1 import events_pb2


@dataclass(frozen=True)
class ResultToReport:
    result: events_pb2.AgentResult
    # The command's request id, and its trace, which the result continues.
    request_id: str
    trace: AbstractContextManager[object]


async def report_results(
    *,
    results: Sequence[ResultToReport],
    publisher: PipelinedPublisher,
    topic: str,
    signer: ReportSigner,
    clock: Clock,
) -> None:
    """Returns only once Kafka acknowledged every record (acks=all); raising lets the
    commands be redelivered, and the ledger then re-acknowledges them without re-running.

    All are handed to the producer before waiting, in order, so the results of one grant
    reach its partition in the order the commands ran."""
    deliveries: list[Awaitable[object]] = []
    for item in results:
        with item.trace:
            envelope = build_envelope(
                signer.sign(item.result),
                producer=f"agent:{signer.agent_id}",
                occurred_at=clock.now(),
                request_id=item.request_id,
                grant_id=item.result.grant_id,
            )
        headers = {"lapse-type": envelope.type, "lapse-event-id": envelope.event_id}
        headers.update(envelope.trace_context)
        deliveries.append(
            await publisher.send(
                topic=topic,
                key=item.result.grant_id,
                value=envelope.SerializeToString(deterministic=True),
                headers=headers,
            )
        )
    for delivery in await asyncio.gather(*deliveries, return_exceptions=True):
        if isinstance(delivery, BaseException):
            raise delivery
