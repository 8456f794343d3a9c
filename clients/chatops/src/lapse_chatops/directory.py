"""Who is who: chat identities mapped to Lapse subjects, read from a YAML file.

```yaml
slack:
  U0123ABCD: {subject: alice}
teams:
  "00000000-0000-0000-0000-000000000000": {subject: bob}
```

Slack users are keyed by user id. Teams users by Azure AD object id (`from.aadObjectId`) or
by Teams user id (`from.id`, `29:...`): ids the platform assigns and nobody can choose. Display
names are not looked at: anyone can set theirs to someone else's.

The file says only who a chat user is. What they may do (roles) and which groups they are in
come from the services' own identity sources; chatops' tokens carry the subject alone, so a
`roles` or `groups` entry here is refused rather than silently ignored.

The file is read again when it changes, so people can be added without a restart; a broken
edit is logged and the last good version stays in use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from lapse_common.watched_file import WatchedFile
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lapse_chatops.payload_bounds import MAX_ID_CHARS

# Lapse subjects are bounded like every text field the services accept.
MAX_SUBJECT_CHARS = 256


@dataclass(frozen=True)
class Person:
    subject: str


class DirectoryError(Exception):
    pass


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1, max_length=MAX_SUBJECT_CHARS, pattern=r"^\S+$")

    @model_validator(mode="before")
    @classmethod
    def _no_authority(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            claimed = sorted({"roles", "groups"} & set(raw))
            if claimed:
                raise ValueError(
                    f"{' and '.join(claimed)} are not read from the chatops directory (its "
                    "tokens assert only the subject); list them in the services' directory "
                    "file (LAPSE_AUTH_DIRECTORY_FILE) instead"
                )
        return raw


class _DirectoryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slack: dict[str, _Entry] = {}
    teams: dict[str, _Entry] = {}

    @model_validator(mode="after")
    def _ids_bounded(self) -> _DirectoryFile:
        for platform, entries in (("slack", self.slack), ("teams", self.teams)):
            for key in entries:
                if not key.strip() or len(key) > MAX_ID_CHARS:
                    raise ValueError(
                        f"{platform} id {key[:40]!r} must be 1 to {MAX_ID_CHARS} characters"
                    )
        return self


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
            return {str(key): Person(subject=entry.subject) for key, entry in entries.items()}

        return cls(slack=people(parsed.slack), teams=people(parsed.teams))

    def slack_person(self, user_id: str) -> Person | None:
        return self.slack.get(user_id) if user_id else None

    def teams_person(self, *, aad_object_id: str, user_id: str) -> Person | None:
        for key in (aad_object_id, user_id):
            if key and key in self.teams:
                return self.teams[key]
        return None

    def slack_user_of(self, subject: str) -> str | None:
        """The Slack user id a Lapse subject is reached at: the first one in the file when
        several map to the same subject."""
        return _first_key_of(self.slack, subject)

    def teams_user_of(self, subject: str) -> str | None:
        """The Teams id of a Lapse subject, first one in the file."""
        return _first_key_of(self.teams, subject)


def _first_key_of(people: dict[str, Person], subject: str) -> str | None:
    if not subject:
        return None
    return next((key for key, person in people.items() if person.subject == subject), None)


class DirectoryFile(WatchedFile[Directory]):
    """The directory file, re-read when its modification time changes (a broken edit keeps
    the last good version)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, parse=Directory.parse, errors=DirectoryError, label="directory file")
