"""The command language people type in chat, after `/lapse` in Slack or `@Lapse` in Teams:

    request INTEGRATION/RESOURCE PERMISSION as LOGIN [for DURATION] [because REASON...]
    help

`as` and `for` may come in either order; `because` takes the rest of the message. Without
`for`, the flow's default duration applies. Keywords are case-insensitive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

USAGE = (
    "usage: request INTEGRATION/RESOURCE PERMISSION as LOGIN [for DURATION] [because REASON]\n"
    "  e.g. request demo-pg/appdb read as alice for 30m because looking into INC-123\n"
    "  DURATION: 90s, 30m, 4h, 1h30m or 2d (default: the Access Flow's)\n"
    "  help: this text"
)

_DURATION = re.compile(r"^(?:\d+[dhms])+$")
_DURATION_PART = re.compile(r"(\d+)([dhms])")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_WORD = re.compile(r"\S+")


class CommandError(ValueError):
    """The text is not a command; the message says what is wrong."""


@dataclass(frozen=True)
class HelpCommand:
    pass


@dataclass(frozen=True)
class RequestCommand:
    integration_id: str
    resource: str
    permission: str
    principal: str
    # 0: the flow's default duration.
    duration_seconds: int
    justification: str

    def describe(self) -> str:
        return f"{self.integration_id}/{self.resource} {self.permission} as {self.principal}"


Command = HelpCommand | RequestCommand


def parse_duration(text: str) -> int:
    if not _DURATION.match(text.lower()):
        raise CommandError(f"{text!r} is not a duration like 90s, 30m, 4h, 1h30m or 2d")
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(text.lower()))
    if seconds <= 0:
        raise CommandError(f"duration {text!r} must be longer than zero")
    return seconds


def parse_command(text: str) -> Command:
    words = list(_WORD.finditer(text))
    if not words or words[0].group().lower() == "help":
        return HelpCommand()
    verb = words[0].group()
    if verb.lower() != "request":
        raise CommandError(f"unknown command {verb!r}: try `request ...` or `help`")
    if len(words) < 3:
        raise CommandError("`request` needs INTEGRATION/RESOURCE and PERMISSION")
    target, permission = words[1].group(), words[2].group()
    integration_id, slash, resource = target.partition("/")
    if not slash or not integration_id or not resource or "/" in resource:
        raise CommandError(f"{target!r} must look like INTEGRATION/RESOURCE, e.g. demo-pg/appdb")
    if permission.lower() in {"as", "for", "because"}:
        raise CommandError("`request` needs a PERMISSION after INTEGRATION/RESOURCE, e.g. read")

    clauses: dict[str, str] = {}
    index = 3
    while index < len(words):
        keyword = words[index].group().lower()
        if keyword == "because":
            reason = text[words[index].end() :].strip()
            if not reason:
                raise CommandError("`because` needs a reason after it")
            clauses["because"] = reason
            break
        if keyword not in {"as", "for"}:
            raise CommandError(
                f"unexpected {words[index].group()!r}: expected `as LOGIN`, `for DURATION` "
                "or `because REASON`"
            )
        if keyword in clauses:
            raise CommandError(f"`{keyword}` given twice")
        if index + 1 >= len(words):
            raise CommandError(f"`{keyword}` needs a value after it")
        clauses[keyword] = words[index + 1].group()
        index += 2
    if "as" not in clauses:
        raise CommandError("say which login gets the access: `as LOGIN`")
    return RequestCommand(
        integration_id=integration_id,
        resource=resource,
        permission=permission,
        principal=clauses["as"],
        duration_seconds=parse_duration(clauses["for"]) if "for" in clauses else 0,
        justification=clauses.get("because", ""),
    )
