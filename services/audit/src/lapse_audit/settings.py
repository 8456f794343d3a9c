"""Audit service configuration (LAPSE_AUDIT_* environment variables).

The database comes from LAPSE_DATABASE_URL (`lapse_common.settings.DatabaseSettings`),
Kafka from LAPSE_KAFKA_*, token keys from LAPSE_AUTH_*.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class AuditSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAPSE_AUDIT_", extra="ignore")

    grpc_address: str = "127.0.0.1:50054"
