"""The agent's YAML config: which integrations it serves and how permissions map to the
target. Target credentials live here (or in environment variables named here) and never
travel over Kafka.

Every validation error names the file, the integration and the field, so an operator can
fix a broken config without reading code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from lapse_agent.connectors.postgres.identifiers import is_safe_identifier
from lapse_agent.principal_rules import PrincipalRules

# Names that appear in GrantSpecs (integration, resource, permission): plain tokens.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_NAME_RULE = "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ConfigError(Exception):
    """The agent config cannot be used; the message lists every problem found."""


def _check_name(value: str, *, what: str) -> str:
    if not _NAME.fullmatch(value):
        raise PydanticCustomError(
            "lapse_name",
            "{what} {value} must be {rule}",
            {"what": what, "value": repr(value), "rule": _NAME_RULE},
        )
    return value


class ResourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Permission name as requested (read, write, admin) -> the target role that grants it.
    permissions: dict[str, str] = Field(min_length=1)

    @field_validator("permissions")
    @classmethod
    def _names_are_safe(cls, permissions: dict[str, str]) -> dict[str, str]:
        for permission, role in permissions.items():
            _check_name(permission, what="permission")
            if not is_safe_identifier(role):
                raise PydanticCustomError(
                    "lapse_role",
                    "role {role} for permission {permission} is not an allowed PostgreSQL "
                    "role name (1-63 letters, digits, '_', '.', '-' or '@', starting with a "
                    "letter or '_')",
                    {"role": repr(role), "permission": repr(permission)},
                )
        return permissions


_MAX_PATTERN_LENGTH = 128
_MAX_PATTERNS = 1000


def _check_patterns(patterns: list[str], *, which: str) -> list[str]:
    if len(patterns) > _MAX_PATTERNS:
        raise PydanticCustomError(
            "lapse_patterns",
            "{which} list has {count} patterns, more than {limit}",
            {"which": which, "count": len(patterns), "limit": _MAX_PATTERNS},
        )
    for pattern in patterns:
        if not pattern.strip() or len(pattern) > _MAX_PATTERN_LENGTH or "\x00" in pattern:
            raise PydanticCustomError(
                "lapse_pattern",
                "{which} pattern {pattern} must be 1-{limit} characters, not blank",
                {"which": which, "pattern": repr(pattern[:40]), "limit": _MAX_PATTERN_LENGTH},
            )
    return patterns


class PrincipalRulesConfig(BaseModel):
    """`principals:` of an integration: glob patterns (see lapse_agent.principal_rules).
    Superusers, `postgres` and the agent's own login are refused whatever is here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deny: list[str] = Field(default_factory=list)
    allow: list[str] | None = None

    @field_validator("deny")
    @classmethod
    def _deny_patterns(cls, patterns: list[str]) -> list[str]:
        return _check_patterns(patterns, which="deny")

    @field_validator("allow")
    @classmethod
    def _allow_patterns(cls, patterns: list[str] | None) -> list[str] | None:
        if patterns is None:
            return None
        if not patterns:
            raise PydanticCustomError(
                "lapse_empty_allow",
                "an empty allow list would refuse every principal; leave 'allow' out to "
                "allow every principal that is not denied",
            )
        return _check_patterns(patterns, which="allow")

    def rules(self) -> PrincipalRules:
        return PrincipalRules(
            deny=tuple(self.deny), allow=None if self.allow is None else tuple(self.allow)
        )


class PostgresIntegrationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    kind: Literal["postgres"]
    # Exactly one of these two. `dsn_env` names an environment variable holding the DSN,
    # so the secret can stay out of the file.
    dsn: SecretStr | None = None
    dsn_env: str | None = None
    # Ending open sessions matters when a login did `SET ROLE` to the revoked role: the
    # session would keep that role's privileges until it disconnects.
    terminate_sessions_on_revoke: bool = False
    pool_max_size: int = Field(default=4, ge=1, le=64)
    # Commands for different grants run at once, up to this many on this integration; each
    # holds a pooled connection, so more than pool_max_size only queue for the pool.
    max_concurrent_commands: int = Field(default=4, ge=1, le=64)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    statement_timeout_seconds: float = Field(default=15.0, gt=0)
    resources: dict[str, ResourceConfig] = Field(min_length=1)
    principals: PrincipalRulesConfig = Field(default_factory=PrincipalRulesConfig)

    @field_validator("id")
    @classmethod
    def _id_is_a_name(cls, value: str) -> str:
        return _check_name(value, what="integration id")

    @field_validator("resources")
    @classmethod
    def _resource_names(cls, resources: dict[str, ResourceConfig]) -> dict[str, ResourceConfig]:
        for resource in resources:
            _check_name(resource, what="resource")
        return resources

    @field_validator("dsn")
    @classmethod
    def _dsn_is_postgres(cls, dsn: SecretStr | None) -> SecretStr | None:
        # The value is a secret: the message must not echo it.
        if dsn is not None and not dsn.get_secret_value().startswith(
            ("postgresql://", "postgres://")
        ):
            raise PydanticCustomError("lapse_dsn", "must be a postgresql:// (or postgres://) URL")
        return dsn

    @field_validator("dsn_env")
    @classmethod
    def _dsn_env_is_set(cls, name: str | None, info: ValidationInfo) -> str | None:
        if name is None:
            return None
        if not _ENV_VAR.fullmatch(name):
            raise PydanticCustomError(
                "lapse_env_name", "{name} is not an environment variable name", {"name": repr(name)}
            )
        environ = _environ(info)
        value = environ.get(name, "")
        if not value:
            raise PydanticCustomError(
                "lapse_env_unset",
                "environment variable {name} is not set or empty",
                {"name": name},
            )
        if not value.startswith(("postgresql://", "postgres://")):
            raise PydanticCustomError(
                "lapse_dsn",
                "environment variable {name} must hold a postgresql:// (or postgres://) URL",
                {"name": name},
            )
        return name

    @model_validator(mode="after")
    def _exactly_one_dsn_source(self, info: ValidationInfo) -> PostgresIntegrationConfig:
        if (self.dsn is None) == (self.dsn_env is None):
            raise PydanticCustomError("lapse_dsn_source", "set exactly one of 'dsn' or 'dsn_env'")
        if self.dsn_env is not None:
            self.dsn = SecretStr(_environ(info)[self.dsn_env])
        return self

    @property
    def target_dsn(self) -> str:
        # The model validator guarantees a DSN once validation succeeded.
        assert self.dsn is not None
        return self.dsn.get_secret_value()


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    integrations: list[PostgresIntegrationConfig] = Field(min_length=1)

    @field_validator("integrations")
    @classmethod
    def _ids_are_unique(
        cls, integrations: list[PostgresIntegrationConfig]
    ) -> list[PostgresIntegrationConfig]:
        seen: set[str] = set()
        for integration in integrations:
            if integration.id in seen:
                raise PydanticCustomError(
                    "lapse_duplicate_id",
                    "integration id {id} is defined more than once",
                    {"id": repr(integration.id)},
                )
            seen.add(integration.id)
        return integrations

    def integration_ids(self) -> list[str]:
        return [integration.id for integration in self.integrations]

    def principal_rules(self) -> dict[str, PrincipalRules]:
        return {integration.id: integration.principals.rules() for integration in self.integrations}


def _environ(info: ValidationInfo) -> Mapping[str, str]:
    context = info.context if isinstance(info.context, Mapping) else {}
    environ = context.get("environ")
    return environ if isinstance(environ, Mapping) else os.environ


@dataclass(frozen=True)
class _ErrorPlace:
    integration: str
    field: str


def _place(raw: Any, loc: tuple[int | str, ...]) -> _ErrorPlace:
    """Turn a pydantic error location into 'integration X' + 'field a.b'."""
    if len(loc) >= 2 and loc[0] == "integrations" and isinstance(loc[1], int):
        index = loc[1]
        entries = raw.get("integrations") if isinstance(raw, dict) else None
        entry = entries[index] if isinstance(entries, list) and index < len(entries) else None
        raw_id = entry.get("id") if isinstance(entry, dict) else None
        label = (
            f"integration {raw_id!r} (integrations[{index}])"
            if isinstance(raw_id, str)
            else f"integrations[{index}]"
        )
        # Drop pydantic's union/function markers; keep the path an operator would write.
        field = ".".join(str(part) for part in loc[2:] if not str(part).startswith("function-"))
        return _ErrorPlace(integration=label, field=field or "(whole entry)")
    return _ErrorPlace(integration="(top level)", field=".".join(str(p) for p in loc) or "(file)")


def parse_config(raw: Any, *, source: str, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Validate already-parsed YAML; `source` names the file in error messages."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with an 'integrations' list at the top")
    try:
        return AgentConfig.model_validate(
            raw, context={"environ": environ if environ is not None else os.environ}
        )
    except ValidationError as invalid:
        problems = []
        for error in invalid.errors(include_input=False, include_url=False):
            place = _place(raw, tuple(error["loc"]))
            problems.append(f"{source}: {place.integration}: field {place.field!r}: {error['msg']}")
        raise ConfigError("invalid agent config:\n  " + "\n  ".join(problems)) from None


def load_config(path: Path, *, environ: Mapping[str, str] | None = None) -> AgentConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read agent config: {error.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse_config(raw, source=str(path), environ=environ)
