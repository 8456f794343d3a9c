"""Request service configuration (LAPSE_REQUEST_* environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RequestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAPSE_REQUEST_", extra="ignore")

    grpc_address: str = "127.0.0.1:50051"
    # Where the approval service answers CheckRequest.
    approval_address: str = "127.0.0.1:50052"
    approval_timeout_seconds: float = 5.0
    # YAML registry of the internal services allowed to publish access events (offboarding,
    # incidents, CI requests) and their public keys; unset refuses every access event.
    access_event_producers_file: Path | None = None
    # Access events older than this are refused (replay protection).
    access_event_max_age_seconds: int = Field(default=600, gt=0)
    # An agent without a heartbeat for this long is shown offline in panic previews.
    agent_offline_after_seconds: float = Field(default=35.0, gt=0)
    # How long a scoped revocation reports progress when the caller does not say.
    revocation_wait_seconds: int = Field(default=120, gt=0, le=3600)
