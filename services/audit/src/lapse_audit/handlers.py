"""Consumer handlers: every decoded event, from every topic, goes to record_event.

`subscribe_events` hands a handler the decoded event but not the topic it came from, so
each subscription gets its own handler that knows the topic (see `topic_of`).
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import Message
from lapse_common.agent_reports import AgentRegistry
from lapse_common.clock import Clock
from lapse_common.messaging.codec import DecodedEvent
from lapse_common.messaging.payload_routes import EventHandler
from lapse_common.pb.lapse.v1 import commands_pb2, events_pb2
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_audit.operations.record_event import record_event
from lapse_audit.payload_rendering import unverified_agent_command

TopicOf = Callable[[DecodedEvent[Message]], str]
# What agents send, signed or (refused, but recorded) not.
_AGENT_REPORTS = (events_pb2.SignedAgentReport, events_pb2.AgentResult, events_pb2.AgentHeartbeat)


def recording_handler(
    *, topic_of: TopicOf, clock: Clock, agents: AgentRegistry | None = None
) -> EventHandler[Message]:
    """`agents`: the enrolled agents' keys, to record with each agent report whether its
    signature verifies (and if not, why)."""

    async def record(*, session: AsyncSession, event: DecodedEvent[Message]) -> None:
        # The consumer knows the topic it read; `topic_of` serves events decoded elsewhere.
        topic = event.source_topic or topic_of(event)
        verification = ""
        if agents is not None and isinstance(event.payload, _AGENT_REPORTS):
            verification = await agents.outcome(event.payload)
        await record_event(
            session, event=event, topic=topic, recorded_at=clock.now(), verification=verification
        )

    return record


def fixed_topic(topic: str) -> TopicOf:
    return lambda _event: topic


def agent_command_topic(topics: Topics) -> TopicOf:
    """The per-agent command topic a command was read from, rebuilt from the agent id in
    the command (one pattern subscription covers every agent's topic)."""

    def topic_of(event: DecodedEvent[Message]) -> str:
        if isinstance(event.payload, commands_pb2.SignedCommand):
            command = unverified_agent_command(event.payload)
            if command is not None:
                try:
                    return topics.agent_commands(command.spec.agent_id)
                except ValueError:
                    pass
        # No usable agent id: say which family of topics it came from, not a guess.
        return topics.agent_commands_pattern

    return topic_of
