"""Revoker gauges (dead-letter depth, stuck / in-flight per agent, heartbeat age).

OpenTelemetry reads observable gauges synchronously, while the numbers live in the DB;
a background loop refreshes a snapshot that the gauge callbacks read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from lapse_common.clock import Clock
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lapse_revoker.operations.read_revocations import AgentStatus, agent_statuses

logger = logging.getLogger(__name__)


@dataclass
class RevokerMetrics:
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    interval_seconds: float = 5.0
    _statuses: list[AgentStatus] = field(default_factory=list)

    def __post_init__(self) -> None:
        meter = metrics.get_meter("lapse.revoker")
        meter.create_observable_gauge(
            "lapse.revocations.dead_letter_depth",
            callbacks=[self._dead_letter_depth],
            description="revocations waiting for an operator (stuck)",
        )
        meter.create_observable_gauge(
            "lapse.revocations.stuck",
            callbacks=[self._stuck],
            description="stuck revocations per agent",
        )
        meter.create_observable_gauge(
            "lapse.revocations.in_flight",
            callbacks=[self._in_flight],
            description="revoke commands awaiting an ack, per agent",
        )
        meter.create_observable_gauge(
            "lapse.agents.heartbeat_age",
            unit="s",
            callbacks=[self._heartbeat_age],
            description="seconds since the agent's last heartbeat",
        )

    def _dead_letter_depth(self, _options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(sum(s.stuck for s in self._statuses))

    def _stuck(self, _options: CallbackOptions) -> Iterable[Observation]:
        for status in self._statuses:
            yield Observation(status.stuck, {"agent_id": status.agent_id})

    def _in_flight(self, _options: CallbackOptions) -> Iterable[Observation]:
        for status in self._statuses:
            yield Observation(status.in_flight, {"agent_id": status.agent_id})

    def _heartbeat_age(self, _options: CallbackOptions) -> Iterable[Observation]:
        now = self.clock.now()
        for status in self._statuses:
            age = status.heartbeat_age(now)
            if age is not None:
                yield Observation(age.total_seconds(), {"agent_id": status.agent_id})

    async def run(self) -> None:
        while True:
            try:
                async with self.sessions() as session:
                    self._statuses = await agent_statuses(session=session)
            except Exception:
                logger.exception("could not refresh revoker metrics")
            await asyncio.sleep(self.interval_seconds)
