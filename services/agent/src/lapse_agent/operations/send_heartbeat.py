"""Tell the platform this agent is alive and which integrations it serves."""

from __future__ import annotations

from collections.abc import Sequence

from lapse_common.agent_reports import ReportSigner
from lapse_common.clock import Clock
from lapse_common.messaging.codec import build_envelope
from lapse_common.messaging.publishing import Publisher
from lapse_common.pb.lapse.v1 import events_pb2


async def send_heartbeat(
    *,
    publisher: Publisher,
    topic: str,
    signer: ReportSigner,
    integrations: Sequence[str],
    version: str,
    clock: Clock,
) -> None:
    agent_id = signer.agent_id
    heartbeat = events_pb2.AgentHeartbeat(
        agent_id=agent_id, integrations=list(integrations), version=version
    )
    now = clock.now()
    heartbeat.sent_at.FromDatetime(now)
    envelope = build_envelope(signer.sign(heartbeat), producer=f"agent:{agent_id}", occurred_at=now)
    headers = {"lapse-type": envelope.type, "lapse-event-id": envelope.event_id}
    await publisher.publish(
        topic=topic,
        key=agent_id,
        value=envelope.SerializeToString(deterministic=True),
        headers=headers,
    )
