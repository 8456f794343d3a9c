"""Where the CLI finds the services and keeps the caller's token."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class CliSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAPSE_", extra="ignore")

    request_address: str = "127.0.0.1:50051"
    audit_address: str = "127.0.0.1:50054"
    revoker_address: str = "127.0.0.1:50055"
    approval_address: str = "127.0.0.1:50052"
    # Where `lapse login` stores the token (mode 0600).
    cli_home: Path = Path(os.path.expanduser("~/.lapse"))
    # Private key used by `lapse login --dev` to mint tokens; only for local/demo runs.
    dev_token_key_file: Path = Path(".lapse/keys/dev-token.key")
    auth_issuer: str = "lapse-dev"
    auth_audience: str = "lapse"
    # The services refuse longer-lived tokens; `lapse login --dev` refuses to mint them.
    auth_max_token_lifetime_seconds: int = 12 * 3600

    @property
    def token_file(self) -> Path:
        return self.cli_home / "token"
