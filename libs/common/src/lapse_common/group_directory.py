"""Group membership from a directory file, added to the groups a token claims.

Identity providers do not always put groups in tokens (or put too many); an admin can list
the groups Access Flows refer to in one YAML file instead (`LAPSE_AUTH_DIRECTORY_FILE`):

```yaml
groups:
  engineering: [alice, bob]
  db-approvers: [carol]
```

A person's groups are the token's `groups` claim plus every directory group listing them.
The file is re-read when it changes (lapse_common.watched_file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from lapse_common.watched_file import WatchedFile


class GroupDirectoryError(Exception):
    pass


class _DirectoryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    groups: dict[str, list[str]] = {}

    @field_validator("groups")
    @classmethod
    def _named_members(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for group, members in value.items():
            if not group.strip():
                raise ValueError("a group needs a name")
            if any(not str(member).strip() for member in members):
                raise ValueError(f"group {group!r} lists an empty member")
        return value


@dataclass(frozen=True)
class GroupDirectory:
    groups_by_member: dict[str, frozenset[str]]

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
        members: dict[str, set[str]] = {}
        for group, people in parsed.groups.items():
            for person in people:
                members.setdefault(str(person), set()).add(group)
        return cls({person: frozenset(groups) for person, groups in members.items()})

    def groups_of(self, subject: str, *, claimed: tuple[str, ...] = ()) -> tuple[str, ...]:
        listed = self.groups_by_member.get(subject, frozenset())
        return tuple(sorted(set(claimed) | listed))


def watch_group_directory(path: Path) -> WatchedFile[GroupDirectory]:
    return WatchedFile(
        path, parse=GroupDirectory.parse, errors=GroupDirectoryError, label="directory file"
    )
