"""Configuration of the chat front end, read from LAPSE_CHATOPS_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TOKEN_ISSUER = "lapse-chatops"


class ChatopsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAPSE_CHATOPS_", extra="ignore")

    listen_address: str = "127.0.0.1:8085"
    request_address: str = "127.0.0.1:50051"
    approval_address: str = "127.0.0.1:50052"
    # Slack answers a slash command or button click with an error after 3 s, so each call to
    # a Lapse service gets less than that.
    call_timeout_seconds: float = Field(default=2.5, gt=0)

    # Slack: without a signing secret the /slack routes are not served at all.
    slack_signing_secret: SecretStr = SecretStr("")
    slack_bot_token: SecretStr = SecretStr("")
    slack_api_base_url: str = "https://slack.com/api/"
    # Channel id (C...) where approvers get Approve / Reject buttons.
    slack_approvers_channel: str = ""

    # Teams: the security token shown when the outgoing webhook was created (base64).
    # Without it the /teams route is not served.
    teams_hmac_secret: SecretStr = SecretStr("")
    # Incoming webhook (or Workflows "when a webhook request is received") for notifications.
    teams_webhook_url: SecretStr = SecretStr("")
    # Where a person approves a request outside Slack; notifications link to
    # {console_url}/requests/{request_id}.
    console_url: str = "http://127.0.0.1:8080"

    # YAML: which chat user (Slack user id, Teams object id) is which Lapse subject.
    directory_file: Path = Path(".lapse/chatops-directory.yaml")
    # chatops' own Ed25519 private key (PEM). Its tokens name the subject only; the services
    # trust its public key for issuer `token_issuer` and take roles and groups from their own
    # identity sources. Not the key behind `lapse login --dev` or the identity provider's.
    token_key_file: Path = Path(".lapse/keys/chatops-token.key")
    token_issuer: str = Field(default=DEFAULT_TOKEN_ISSUER, min_length=1)
    token_audience: str = "lapse"
    # `kid` header of the tokens, for services that pick the key by it; empty: none.
    token_key_id: str = ""
    # Tokens are minted per call for the person in chat and thrown away after it.
    token_ttl_seconds: int = Field(default=60, ge=10, le=300)
    # Signed calls remembered to refuse a replay within the 5-minute window (about 200 bytes
    # each); when full of unexpired calls, new ones get 503 instead of forgetting one.
    replay_memory_entries: int = Field(default=50_000, ge=100, le=5_000_000)

    # Tell requesters in chat when their request is decided, their access is active and before
    # it expires, read from Kafka (LAPSE_KAFKA_*). Unset: on when LAPSE_KAFKA_BOOTSTRAP_SERVERS
    # is set, so a chat front end deployed without Kafka keeps working as before.
    notify_requesters: bool | None = None
    # A failed delivery is tried this often, with doubling pauses, then logged and dropped:
    # a chat outage must not hold back the notifications after it.
    notify_attempts: int = Field(default=3, ge=1, le=10)
    notify_retry_seconds: float = Field(default=1.0, ge=0)
    # Events older than this are not announced: a consumer group reading history (first
    # start, a long outage) must not flood people with news about long-settled requests.
    notify_max_age_seconds: int = Field(default=3600, gt=0)

    @property
    def slack_enabled(self) -> bool:
        return bool(self.slack_signing_secret.get_secret_value())

    @property
    def teams_enabled(self) -> bool:
        return bool(self.teams_hmac_secret.get_secret_value())

    def listen_host_port(self) -> tuple[str, int]:
        host, _, port = self.listen_address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(
                f"LAPSE_CHATOPS_LISTEN_ADDRESS {self.listen_address!r} must look like HOST:PORT"
            )
        return host.strip("[]"), int(port)
