"""Grant-scheduler configuration (LAPSE_SCHEDULER_* environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SchedulerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAPSE_SCHEDULER_", extra="ignore")

    # Ed25519 private key (PEM) the platform signs agent commands with; the commands' key_id
    # is derived from it (lapse_common.key_ids), so agents can hold old and new keys.
    command_signing_key_file: Path = Path(".lapse/keys/command-signing.key")
    # An agent refuses a grant command older than this (it may have been offline).
    command_ttl_seconds: int = 600
    # A grant command unanswered this long is given up (GRANT_FAILED); if the agent still
    # executes it afterwards, the access is revoked at once. Defaults to the command TTL,
    # after which the agent refuses the command anyway.
    grant_ack_deadline_seconds: int = Field(default=600, gt=0)
    # Upper bound on how long the timer sleeps without looking at the DB, so grants
    # activated by another replica are noticed; its own grants wake it immediately.
    timer_max_sleep_seconds: float = 2.0
    timer_batch_size: int = 500
    # The requester is reminded this long before a grant expires (or after three quarters of
    # a shorter remaining lifetime), so they can extend it or wrap up; 0 sends no reminders.
    expiry_notice_seconds: int = Field(default=600, ge=0)
