"""Which principals an integration may grant to or revoke from, by name alone.

Patterns are shell-style globs (`fnmatch`: `*`, `?`, `[abc]`). A deny pattern matches
regardless of case, so `Postgres` cannot slip past `postgres`: a deny list should refuse
too much rather than too little. An allow pattern matches case-sensitively, as the target
compares role names, so an allow list admits no more than it spells out.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

# The conventional superuser of PostgreSQL installations, refused even where the agent's
# login cannot see that it is one (or where it was renamed and a new role took the name).
ALWAYS_DENIED = ("postgres",)
# Enough to tell the operator what the allow list looks like without dumping it.
_SHOWN_PATTERNS = 10


@dataclass(frozen=True)
class PrincipalRules:
    deny: tuple[str, ...] = ()
    # None: every principal not denied; otherwise only those matching a pattern.
    allow: tuple[str, ...] | None = None

    def refusal(self, principal: str, *, integration_id: str) -> str | None:
        """Why the name alone rules the principal out, or None. Needs no target access."""
        folded = principal.casefold()
        for pattern in ALWAYS_DENIED:
            if folded == pattern:
                return (
                    f"refused: principal {principal!r} is {pattern!r}, the conventional "
                    "superuser name, which this agent never grants to or revokes from"
                )
        for pattern in self.deny:
            if fnmatchcase(folded, pattern.casefold()):
                return (
                    f"refused: principal {principal!r} matches deny pattern {pattern!r} of "
                    f"integration {integration_id}"
                )
        if self.allow is not None and not any(
            fnmatchcase(principal, pattern) for pattern in self.allow
        ):
            shown = ", ".join(repr(p) for p in self.allow[:_SHOWN_PATTERNS])
            more = (
                f" and {len(self.allow) - _SHOWN_PATTERNS} more"
                if (len(self.allow) > _SHOWN_PATTERNS)
                else ""
            )
            return (
                f"refused: principal {principal!r} is not on the allow list of integration "
                f"{integration_id} (allowed: {shown}{more})"
            )
        return None
