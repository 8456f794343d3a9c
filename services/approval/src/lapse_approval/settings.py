"""Approval service configuration (LAPSE_APPROVAL_* environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApprovalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAPSE_APPROVAL_", extra="ignore")

    grpc_address: str = "127.0.0.1:50052"
    # One or more flow files, separated by commas.
    flow_files: str = Field(default="deploy/demo/flows.yaml")

    def flow_paths(self) -> list[Path]:
        return [Path(p.strip()) for p in self.flow_files.split(",") if p.strip()]
