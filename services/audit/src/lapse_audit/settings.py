"""Audit service configuration (LAPSE_AUDIT_* environment variables).

The database comes from LAPSE_DATABASE_URL (`lapse_common.settings.DatabaseSettings`),
Kafka from LAPSE_KAFKA_*, token keys from LAPSE_AUTH_*.
"""

from __future__ import annotations

from pathlib import Path

from lapse_common.audit_checkpoints import LOG_NAME
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AuditSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAPSE_AUDIT_", extra="ignore")

    grpc_address: str = "127.0.0.1:50054"
    # Ed25519 private key (PEM) that signs checkpoints of the chain head; the service does
    # not start without it. It lives outside the database, so whoever rewrites the
    # database cannot re-sign the history.
    checkpoint_key_file: Path = Path(".lapse/keys/audit-checkpoint.key")
    # Where signed checkpoints are written (one file per head, never overwritten). Put it
    # where whoever can write the database cannot (another volume, a WORM sync).
    checkpoint_dir: Path = Path(".lapse/audit-checkpoints")
    # How often the head is checkpointed (only when it moved since the last checkpoint).
    checkpoint_interval_seconds: float = Field(default=60.0, gt=0, le=24 * 3600)
    # Names this installation's log in its checkpoints, so one log's checkpoint cannot
    # vouch for another's.
    log_name: str = Field(default="lapse", pattern=LOG_NAME.pattern)
