"""Who is who: chat identities mapped to Lapse subjects, read from a YAML file.

```yaml
slack:
  U0123ABCD: {subject: alice, groups: [engineering]}
teams:
  "00000000-0000-0000-0000-000000000000": {subject: bob, groups: [engineering]}
```

Slack users are keyed by user id. Teams users by Azure AD object id (`from.aadObjectId`), or
by display name (`from.name`) for demos: display names are not unique, so prefer the id.
The file is read again when it changes, so people can be added without a restart; a broken
edit is logged and the last good version stays in use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Person:
    subject: str
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()


class DirectoryError(Exception):
    pass


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1)
    groups: list[str] = []
    roles: list[str] = []


class _DirectoryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slack: dict[str, _Entry] = {}
    teams: dict[str, _Entry] = {}


@dataclass(frozen=True)
class Directory:
    slack: dict[str, Person]
    teams: dict[str, Person]

    @classmethod
    def parse(cls, text: str, *, source: str) -> Directory:
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            raise DirectoryError(f"{source}: not valid YAML: {error}") from error
        try:
            parsed = _DirectoryFile.model_validate(raw)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in error.errors()
            )
            raise DirectoryError(f"{source}: {problems}") from error

        def people(entries: dict[str, _Entry]) -> dict[str, Person]:
            return {
                str(key): Person(
                    subject=entry.subject, groups=tuple(entry.groups), roles=tuple(entry.roles)
                )
                for key, entry in entries.items()
            }

        return cls(slack=people(parsed.slack), teams=people(parsed.teams))

    def slack_person(self, user_id: str) -> Person | None:
        return self.slack.get(user_id) if user_id else None

    def teams_person(self, *, aad_object_id: str, name: str) -> Person | None:
        for key in (aad_object_id, name):
            if key and key in self.teams:
                return self.teams[key]
        return None


class DirectoryFile:
    """The directory file, re-read when its modification time changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp = self._modified()
        self._current = self._read()

    def _modified(self) -> int:
        try:
            return self._path.stat().st_mtime_ns
        except OSError as error:
            raise DirectoryError(f"cannot read directory file {self._path}: {error}") from error

    def _read(self) -> Directory:
        try:
            text = self._path.read_text()
        except OSError as error:
            raise DirectoryError(f"cannot read directory file {self._path}: {error}") from error
        return Directory.parse(text, source=str(self._path))

    @property
    def current(self) -> Directory:
        try:
            stamp = self._modified()
            if stamp != self._stamp:
                self._stamp = stamp
                self._current = self._read()
                logger.info("directory %s reloaded", self._path)
        except DirectoryError as error:
            logger.error("keeping the previous directory: %s", error)
        return self._current
