"""Build one connector per configured integration."""

from __future__ import annotations

from lapse_agent.config import AgentConfig
from lapse_agent.connectors.base import Connector
from lapse_agent.connectors.postgres.connector import PostgresConnector


def build_connectors(config: AgentConfig) -> dict[str, Connector]:
    # Only PostgreSQL exists today; the config's `kind` field already rejects others.
    return {integration.id: PostgresConnector(integration) for integration in config.integrations}
