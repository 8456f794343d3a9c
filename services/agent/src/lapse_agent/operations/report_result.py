"""Publish an AgentResult, signed with the agent's key, to lapse.agent-results.v1, keyed
by grant id."""

from __future__ import annotations

from lapse_common.agent_reports import ReportSigner
from lapse_common.clock import Clock
from lapse_common.messaging.codec import build_envelope
from lapse_common.messaging.publishing import Publisher
from lapse_common.pb.lapse.v1 import events_pb2


async def report_result(
    *,
    result: events_pb2.AgentResult,
    publisher: Publisher,
    topic: str,
    signer: ReportSigner,
    clock: Clock,
    request_id: str = "",
) -> None:
    """Returns only once Kafka acknowledged the record (acks=all); raising lets the
    command be redelivered, and the ledger then re-acknowledges it without re-running."""
    envelope = build_envelope(
        signer.sign(result),
        producer=f"agent:{signer.agent_id}",
        occurred_at=clock.now(),
        request_id=request_id,
        grant_id=result.grant_id,
    )
    headers = {"lapse-type": envelope.type, "lapse-event-id": envelope.event_id}
    headers.update(envelope.trace_context)
    await publisher.publish(
        topic=topic,
        key=result.grant_id,
        value=envelope.SerializeToString(deterministic=True),
        headers=headers,
    )
