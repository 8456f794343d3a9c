"""Kafka topic names: the versioned contract from DESIGN.md."""

from __future__ import annotations

import re
from dataclasses import dataclass

_AGENT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def validate_agent_id(agent_id: str) -> str:
    if not _AGENT_ID.match(agent_id):
        raise ValueError(
            f"agent id {agent_id!r} must be 1-63 lowercase letters, digits or '-', "
            "starting with a letter or digit"
        )
    return agent_id


@dataclass(frozen=True)
class Topics:
    prefix: str = ""

    def _name(self, name: str) -> str:
        return f"{self.prefix}{name}"

    @property
    def requests(self) -> str:
        return self._name("lapse.requests.v1")

    @property
    def decisions(self) -> str:
        return self._name("lapse.decisions.v1")

    @property
    def grants(self) -> str:
        return self._name("lapse.grants.v1")

    @property
    def end_requests(self) -> str:
        return self._name("lapse.end-requests.v1")

    @property
    def revoke_requests(self) -> str:
        return self._name("lapse.revoke-requests.v1")

    @property
    def agent_results(self) -> str:
        return self._name("lapse.agent-results.v1")

    @property
    def agent_heartbeats(self) -> str:
        return self._name("lapse.agent-heartbeats.v1")

    @property
    def agent_registry(self) -> str:
        return self._name("lapse.agent-registry.v1")

    @property
    def revoking_dead_letter(self) -> str:
        return self._name("lapse.revoking-dead-letter.v1")

    @property
    def access_events(self) -> str:
        return self._name("lapse.access-events.v1")

    @property
    def quarantine(self) -> str:
        return self._name("lapse.quarantine.v1")

    def agent_commands(self, agent_id: str) -> str:
        return self._name(f"lapse.agent.{validate_agent_id(agent_id)}.commands.v1")

    @property
    def agent_commands_pattern(self) -> str:
        """Regex matching every agent's command topic (for audit)."""
        # aiokafka anchors a pattern only at the start; the `$` keeps look-alikes out.
        return re.escape(self.prefix) + r"lapse\.agent\.[a-z0-9-]+\.commands\.v1$"

    def shared(self) -> list[str]:
        return [
            self.requests,
            self.decisions,
            self.grants,
            self.end_requests,
            self.revoke_requests,
            self.agent_results,
            self.agent_heartbeats,
            self.agent_registry,
            self.revoking_dead_letter,
            self.access_events,
            self.quarantine,
        ]
