"""The producer registry: which internal services may publish which access events.

Consumers load it from YAML:

    producers:
      hr-offboarding:
        public_key_file: keys/hr-offboarding.pub   # relative to this file's directory
        events: [user_offboarded]
      ci-pipelines:
        public_key: |
          -----BEGIN PUBLIC KEY-----
          ...
        events: [access_requested]
        machine_identities: [ci-deploy]

A producer's name is also its key id. The file is validated strictly: a typo in a field
name must fail loudly rather than silently grant or withhold trust.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from lapse_common.access_events.keys import load_public_key
from lapse_common.access_events.kinds import EVENT_KINDS

PRODUCER_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
_PRODUCER_NAME = re.compile(PRODUCER_NAME_PATTERN)

ProducerName = Annotated[str, StringConstraints(pattern=PRODUCER_NAME_PATTERN)]


def validate_producer_name(name: str) -> str:
    if not _PRODUCER_NAME.match(name):
        raise ValueError(
            f"producer name {name!r} must be 1-63 lowercase letters, digits or '-', "
            "starting with a letter or digit"
        )
    return name


class ProducerRegistryError(Exception):
    """The registry file cannot be used; the message names the file, producer and field."""


class _ProducerEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    public_key_file: Path | None = None
    public_key: str | None = None
    events: list[str] = Field(min_length=1)
    machine_identities: list[Annotated[str, StringConstraints(min_length=1)]] = []

    @field_validator("events")
    @classmethod
    def _known_kinds(cls, events: list[str]) -> list[str]:
        unknown = [event for event in events if event not in EVENT_KINDS]
        if unknown:
            raise ValueError(
                f"unknown event kind(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(EVENT_KINDS))}"
            )
        return events

    @model_validator(mode="after")
    def _consistent(self) -> _ProducerEntry:
        if (self.public_key_file is None) == (self.public_key is None):
            raise ValueError("set exactly one of public_key_file or public_key")
        if self.machine_identities and "access_requested" not in self.events:
            raise ValueError("machine_identities is only meaningful with access_requested")
        return self


class _RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    producers: dict[ProducerName, _ProducerEntry]


@dataclass(frozen=True)
class RegisteredProducer:
    name: str
    public_key: Ed25519PublicKey
    events: frozenset[str]
    machine_identities: frozenset[str] = frozenset()


class ProducerRegistry:
    def __init__(self, producers: Iterable[RegisteredProducer]) -> None:
        self._by_key_id = {producer.name: producer for producer in producers}

    @classmethod
    def load(cls, path: Path) -> ProducerRegistry:
        try:
            text = path.read_text()
        except OSError as error:
            raise ProducerRegistryError(
                f"{path}: cannot read the producer registry: {error}"
            ) from error
        return cls.parse(text, source=path)

    @classmethod
    def parse(cls, text: str, *, source: Path) -> ProducerRegistry:
        """Parse registry YAML; `source` names it in errors and anchors relative key paths."""
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ProducerRegistryError(f"{source}: not valid YAML: {error}") from error
        try:
            parsed = _RegistryFile.model_validate(document)
        except ValidationError as error:
            raise ProducerRegistryError(_describe(source, error)) from error
        return cls(_registered(source, name, entry) for name, entry in parsed.producers.items())

    def get(self, key_id: str) -> RegisteredProducer | None:
        return self._by_key_id.get(key_id)

    @property
    def producers(self) -> list[str]:
        return sorted(self._by_key_id)


def _registered(source: Path, name: str, entry: _ProducerEntry) -> RegisteredProducer:
    if entry.public_key_file is not None:
        field = "public_key_file"
        key_path = source.parent / entry.public_key_file
        try:
            pem = key_path.read_bytes()
        except OSError as error:
            raise ProducerRegistryError(
                f"{source}: producer {name!r}, field {field}: cannot read {key_path}: {error}"
            ) from error
    else:
        field = "public_key"
        pem = (entry.public_key or "").encode()
    try:
        key = load_public_key(pem)
    except ValueError as error:
        raise ProducerRegistryError(
            f"{source}: producer {name!r}, field {field}: {error}"
        ) from error
    return RegisteredProducer(
        name=name,
        public_key=key,
        events=frozenset(entry.events),
        machine_identities=frozenset(entry.machine_identities),
    )


def _describe(source: Path, error: ValidationError) -> str:
    problems = []
    for detail in error.errors():
        location = [str(part) for part in detail["loc"]]
        # pydantic prefixes our validators' messages with "Value error, ": noise for an admin.
        message = detail["msg"].removeprefix("Value error, ")
        if len(location) >= 2 and location[0] == "producers":
            producer, fields = location[1], location[2:]
            if fields == ["[key]"]:
                problems.append(f"producer name {producer!r}: {message}")
            elif fields:
                problems.append(f"producer {producer!r}, field {'.'.join(fields)}: {message}")
            else:
                problems.append(f"producer {producer!r}: {message}")
        else:
            problems.append(f"field {'.'.join(location) or '(top level)'}: {message}")
    return f"{source}: invalid producer registry:\n  " + "\n  ".join(problems)
