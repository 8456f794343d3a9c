"""Group and role membership from a directory file, added to what a token claims.

Identity providers do not always put groups in tokens (or put too many), and some token
issuers (the chat front end) are trusted to say who someone is but not what they may do;
an admin lists the groups Access Flows refer to, and who holds Lapse's roles, in one YAML
file instead (`LAPSE_AUTH_DIRECTORY_FILE`):

```yaml
groups:
  engineering: [alice, bob]
  db-approvers: [carol]
roles:
  admin: [alice]
  sre: [bob]
```

A person's groups (roles) are the token's `groups` (`roles`) claim plus every directory
group (role) listing them; for a subject-only issuer, the directory's alone.
The file is re-read when it changes (lapse_common.watched_file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from lapse_common.watched_file import WatchedFile


class GroupDirectoryError(Exception):
    pass


class _DirectoryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    groups: dict[str, list[str]] = {}
    roles: dict[str, list[str]] = {}

    @field_validator("groups", "roles")
    @classmethod
    def _named_members(
        cls, value: dict[str, list[str]], info: ValidationInfo
    ) -> dict[str, list[str]]:
        kind = str(info.field_name).removesuffix("s")
        for name, members in value.items():
            if not name.strip():
                raise ValueError(f"a {kind} needs a name")
            if any(not str(member).strip() for member in members):
                raise ValueError(f"{kind} {name!r} lists an empty member")
        return value


def _by_member(listing: dict[str, list[str]]) -> dict[str, frozenset[str]]:
    members: dict[str, set[str]] = {}
    for name, people in listing.items():
        for person in people:
            members.setdefault(str(person), set()).add(name)
    return {person: frozenset(names) for person, names in members.items()}


@dataclass(frozen=True)
class GroupDirectory:
    groups_by_member: dict[str, frozenset[str]]
    roles_by_member: dict[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, *, source: str) -> GroupDirectory:
        try:
            raw = yaml.safe_load(text) or {}
            parsed = _DirectoryFile.model_validate(raw)
        except yaml.YAMLError as error:
            raise GroupDirectoryError(f"{source}: not valid YAML: {error}") from error
        except ValidationError as error:
            problems = "; ".join(
                f"field {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
            )
            raise GroupDirectoryError(f"{source}: {problems}") from error
        return cls(_by_member(parsed.groups), _by_member(parsed.roles))

    def groups_of(self, subject: str, *, claimed: tuple[str, ...] = ()) -> tuple[str, ...]:
        listed = self.groups_by_member.get(subject, frozenset())
        return tuple(sorted(set(claimed) | listed))

    def roles_of(self, subject: str, *, claimed: tuple[str, ...] = ()) -> tuple[str, ...]:
        listed = self.roles_by_member.get(subject, frozenset())
        return tuple(sorted(set(claimed) | listed))


def watch_group_directory(path: Path) -> WatchedFile[GroupDirectory]:
    return WatchedFile(
        path, parse=GroupDirectory.parse, errors=GroupDirectoryError, label="directory file"
    )
