"""Request service configuration (LAPSE_REQUEST_* environment variables)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class RequestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAPSE_REQUEST_", extra="ignore")

    grpc_address: str = "127.0.0.1:50051"
    # Where the approval service answers CheckRequest.
    approval_address: str = "127.0.0.1:50052"
    approval_timeout_seconds: float = 5.0
