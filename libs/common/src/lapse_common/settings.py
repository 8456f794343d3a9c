"""Settings every Lapse process shares, read from LAPSE_* environment variables."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAPSE_KAFKA_", extra="ignore")

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="comma-separated host:port list"
    )
    # Lets several isolated Lapse installations (or test runs) share one cluster.
    topic_prefix: str = ""
    # Stable identity of this process among replicas of the same service (static group
    # membership). Give each replica its own; the default suits one replica per host.
    instance_id: str = Field(default_factory=socket.gethostname)
    # How this client proves who it is (lapse_common.messaging.kafka_security): SASL_SSL
    # with SCRAM and a password file, or SSL with a client certificate. PLAINTEXT (no
    # authentication, anyone on the network can read and forge) only with allow_plaintext.
    security_protocol: Literal["SASL_SSL", "SSL", "PLAINTEXT"] = "SASL_SSL"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"
    username: str = ""
    # A file rather than a variable, so the password is not in the process environment.
    password_file: Path | None = None
    # CA that signed the broker's certificate; unset: the system's trusted CAs.
    ssl_cafile: Path | None = None
    # The client certificate and key for SSL (mutual TLS) instead of SASL.
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    allow_plaintext: bool = False

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_topic_safe(cls, value: str) -> str:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        if not set(value) <= allowed:
            raise ValueError("may contain only letters, digits, '.', '_' and '-'")
        return value


class TelemetrySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAPSE_OTEL_", extra="ignore")

    # OTLP/gRPC collector endpoint, e.g. http://127.0.0.1:4317. Empty: no export.
    exporter_endpoint: str = ""


class AuthSettings(BaseSettings):
    """How services check the bearer tokens presented on gRPC calls."""

    model_config = SettingsConfigDict(env_prefix="LAPSE_AUTH_", extra="ignore")

    # PEM public key (Ed25519 or RSA) that signs user tokens.
    public_key_file: Path | None = None
    # Alternatively a JWKS document on disk (as fetched from the identity provider).
    jwks_file: Path | None = None
    issuer: str = "lapse-dev"
    audience: str = "lapse"
    # YAML `groups: {name: [subjects]}`: groups added to those the token claims (re-read on
    # change). Unset: the token's `groups` claim alone.
    directory_file: Path | None = None


class DatabaseSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAPSE_", extra="ignore")

    # postgresql+asyncpg://... in production (each service uses its own schema in it);
    # sqlite+aiosqlite:///path.db for a zero-setup single-node run.
    database_url: str = "sqlite+aiosqlite:///./.lapse/lapse.db"
