"""The agent's process settings, read from LAPSE_AGENT_* environment variables.

Kafka and telemetry settings are the shared ones (LAPSE_KAFKA_*, LAPSE_OTEL_*); target
credentials are not settings at all: they live in the agent's YAML config (or in the
environment variables that config names).
"""

from __future__ import annotations

from pathlib import Path

from lapse_common.topics import validate_agent_id
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAPSE_AGENT_", extra="ignore")

    agent_id: str
    config_file: Path = Field(description="YAML file describing this agent's integrations")
    # The platform keys commands may be signed with: one file, a directory of them, or
    # both (during a rotation, old and new). At least one key is required.
    command_public_key_file: Path | None = Field(
        default=None,
        description="Ed25519 public key (PEM) of the platform's command-signing key",
    )
    command_public_keys_dir: Path | None = Field(
        default=None,
        description="directory of Ed25519 public keys (PEM, *.pub or *.pem) the platform "
        "may sign commands with; each key's id is derived from the key",
    )
    # A longer window makes a captured command replayable for longer; the platform's
    # commands live 10 minutes (grants) or an ack deadline (revokes).
    command_max_validity_seconds: int = Field(default=900, gt=0, le=86400)
    # How far ahead of this agent's clock a command's issued_at may be.
    command_clock_skew_seconds: int = Field(default=60, ge=0, le=3600)
    signing_key_file: Path = Field(
        description="this agent's own Ed25519 private key (PEM), enrolled with "
        "`lapse agents enroll`: it signs every result and heartbeat"
    )
    heartbeat_interval_seconds: float = Field(default=10.0, gt=0)
    # Epochs and executed command ids; must survive restarts, so it is a file, not memory.
    state_path: Path | None = None
    # Commands expire long before this, so older ledger rows can no longer match anything.
    state_retention_days: int = Field(default=30, ge=1)

    @field_validator("agent_id")
    @classmethod
    def _agent_id_is_topic_safe(cls, value: str) -> str:
        return validate_agent_id(value)

    @property
    def resolved_state_path(self) -> Path:
        return self.state_path or Path(".lapse") / f"agent-{self.agent_id}.db"
