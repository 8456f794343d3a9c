"""Safe PostgreSQL identifiers for GRANT/REVOKE, which cannot take bind parameters.

Two layers, on purpose: a name must first match a strict allow-list pattern (so nothing
surprising ever reaches SQL), and is then double-quoted with embedded quotes doubled (so
even a future loosening of the pattern cannot turn a name into SQL).
"""

from __future__ import annotations

import re

# Letters, digits, '_' and the characters logins commonly carry ('.', '-', '@'); at most
# 63 characters, PostgreSQL's identifier limit (NAMEDATALEN - 1), so nothing is truncated
# into a different, existing name.
_SAFE_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.@-]{0,62}$")


class UnsafeIdentifier(ValueError):
    def __init__(self, name: str, *, what: str) -> None:
        super().__init__(
            f"{what} {name!r} is not an allowed PostgreSQL name: use 1-63 letters, digits, "
            "'_', '.', '-' or '@', starting with a letter or '_'"
        )
        self.name = name


def is_safe_identifier(name: str) -> bool:
    return _SAFE_IDENTIFIER.fullmatch(name) is not None


def quote_identifier(name: str, *, what: str = "identifier") -> str:
    """`name` as a quoted identifier, or UnsafeIdentifier if it is not on the allow-list."""
    if not is_safe_identifier(name):
        raise UnsafeIdentifier(name, what=what)
    return '"' + name.replace('"', '""') + '"'
