"""Revoker configuration (LAPSE_REVOKER_* environment variables).

Defaults give up after about 6 minutes (well within 10): 6 attempts with a 30 s ack deadline
each and backoff 5 s, 10 s, 20 s, 40 s, 80 s (+ up to 20 % jitter) between them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RevokerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAPSE_REVOKER_", extra="ignore")

    grpc_address: str = "127.0.0.1:50055"
    command_signing_key_file: Path = Path(".lapse/keys/command-signing.key")
    ack_deadline_seconds: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=6, ge=1)
    backoff_initial_seconds: float = Field(default=5.0, ge=0)
    backoff_max_seconds: float = Field(default=120.0, ge=0)
    backoff_jitter_ratio: float = Field(default=0.2, ge=0, le=1)
    retry_scan_seconds: float = Field(default=0.5, gt=0)
    # Commands out to one agent at once; more wait in QUEUED, so a dead agent cannot pile
    # up work that would starve the others or flood it when it returns.
    max_in_flight_per_agent: int = Field(default=100, ge=1)
    # An agent silent for this long is reported offline.
    agent_offline_after_seconds: float = Field(default=35.0, gt=0)
