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
    # Records a consumer takes at once (what Kafka has ready, up to this), handled in one
    # transaction per partition. Bigger batches cost less per record; a batch's first
    # record waits for its last before anything it caused is published.
    consumer_batch_size: int = Field(default=50, ge=1, le=10_000)

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
    """How services check the bearer tokens presented on gRPC calls (lapse_common.auth)."""

    model_config = SettingsConfigDict(env_prefix="LAPSE_AUTH_", extra="ignore")

    # Only in dev mode are the dev issuer `lapse-dev` and the keys of lapse_common.dev_keys
    # trusted; a service in production mode (the default) refuses to start with them.
    dev_mode: bool = False
    # The identity provider's issuer (the tokens' `iss`). Empty: `lapse-dev` in dev mode,
    # else LAPSE_AUTH_ISSUER_URL.
    issuer: str = ""
    # OIDC discovery: <issuer_url>/.well-known/openid-configuration names the JWKS URL.
    issuer_url: str = ""
    # Or the JWKS URL itself. https (http only to localhost).
    jwks_url: str = ""
    # PEM public key (Ed25519, RSA or EC P-256) that signs user tokens.
    public_key_file: Path | None = None
    # A JWKS document on disk (re-read on change).
    jwks_file: Path | None = None
    # Fetched keys are used this long before being fetched again; a token with an unknown
    # `kid` fetches them sooner, but at most once per jwks_min_refetch_seconds.
    jwks_cache_seconds: float = Field(default=300, gt=0)
    jwks_min_refetch_seconds: float = Field(default=30, ge=0)
    jwks_fetch_timeout_seconds: float = Field(default=5, gt=0, le=60)
    audience: str = "lapse"
    # Longest accepted token lifetime (exp - iat; tokens without iat are refused).
    max_token_lifetime_seconds: int = Field(default=12 * 3600, gt=0, le=7 * 86400)
    # YAML `groups: {name: [subjects]}` and `roles: {role: [subjects]}`: added to what the
    # token claims (re-read on change). Unset: the token's claims alone.
    directory_file: Path | None = None
    # Issuers trusted only to say who someone is (the chat front end): `issuer=key` pairs,
    # comma-separated, key a PEM file, a JWKS file (*.json) or an https JWKS URL. Their
    # tokens' roles and groups claims are ignored; both come from the directory file.
    subject_only_issuers: str = ""
    # Public keys of the Lapse services allowed to call this one: comma-separated PEM files,
    # each named `<service>.pub` (internal methods such as ApprovalService/CheckRequest
    # accept only these services' tokens).
    service_public_key_files: str = ""
    # This service's own private key, for the tokens it presents to other services.
    service_key_file: Path | None = None

    @field_validator("subject_only_issuers")
    @classmethod
    def _issuer_pairs(cls, value: str) -> str:
        seen: set[str] = set()
        for pair in filter(None, (p.strip() for p in value.split(","))):
            issuer, _, key = pair.partition("=")
            if not issuer.strip() or not key.strip():
                raise ValueError(f"{pair!r} is not issuer=key-file-or-jwks-url")
            if issuer.strip() in seen:
                raise ValueError(f"issuer {issuer.strip()!r} is listed twice")
            seen.add(issuer.strip())
        return value

    def service_public_key_paths(self) -> list[Path]:
        return [Path(p.strip()) for p in self.service_public_key_files.split(",") if p.strip()]

    def subject_only_issuer_keys(self) -> dict[str, str]:
        return {
            issuer.strip(): key.strip()
            for issuer, _, key in (
                pair.partition("=")
                for pair in (p.strip() for p in self.subject_only_issuers.split(","))
                if pair
            )
        }


class DatabaseSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAPSE_", extra="ignore")

    # postgresql+asyncpg://... in production (each service uses its own schema in it);
    # sqlite+aiosqlite:///path.db for a zero-setup single-node run.
    database_url: str = "sqlite+aiosqlite:///./.lapse/lapse.db"


class HousekeepingSettings(BaseSettings):
    """How long each service keeps its outbox rows and inbox ids, and how it prunes them
    (lapse_common.messaging.housekeeping)."""

    model_config = SettingsConfigDict(env_prefix="LAPSE_HOUSEKEEPING_", extra="ignore")

    # Once Kafka has a row nothing reads it again; a day leaves time to look into what a
    # service sent. Rows never published (pending or set aside) are kept whatever their age.
    outbox_retention_seconds: float = Field(default=86400, gt=0)
    # An inbox id must outlive every copy of its event Kafka could still deliver, or a
    # redelivery is handled a second time. Topics are created (kafka_admin) without a
    # retention.ms of their own, so they keep the broker's log.retention.hours: Kafka's
    # default 168 h (deploy/local: 24 h). Kafka deletes whole segments, so a record can stay
    # up to a segment roll (log.roll.hours, also 168 h by default) beyond that: up to 14 days.
    # A consumer group whose offsets expired (offsets.retention.minutes, 7 days) starts over
    # at the earliest record and sees all of it again. 30 days covers that with room to spare;
    # raise it with the topics' retention.
    inbox_retention_seconds: float = Field(default=30 * 86400, gt=0)
    # How often a pass runs; each pass prunes everything that is due, batch by batch.
    interval_seconds: float = Field(default=60, gt=0)
    # Rows per DELETE, each in its own short transaction, with a pause between them so the
    # service's own transactions (and, on SQLite, its single writer) get their turn.
    batch_size: int = Field(default=1000, gt=0, le=100_000)
    batch_pause_seconds: float = Field(default=0.05, ge=0)
