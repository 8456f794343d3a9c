"""Which asyncpg/PostgreSQL failures are worth retrying.

Retrying helps when the target was unreachable, overloaded, restarting, or the agent's
own login was refused (an operator can fix that without touching the grant). It does not
help when a role or login is undefined or the agent lacks the privilege to grant a role.
"""

from __future__ import annotations

import asyncpg

from lapse_agent.connectors.base import PermanentTargetError, TargetError, TransientTargetError

# SQLSTATE classes (first two characters) that describe the moment, not the request:
# 08 connection, 28 the agent's own authentication, 40 serialization/deadlock,
# 53 insufficient resources, 55 lock not available, 57 operator intervention
# (shutdown, statement timeout), 58 system error, XX internal error.
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "28", "40", "53", "55", "57", "58", "XX"})


def classify(error: BaseException, *, doing: str) -> TargetError:
    """Map an exception raised while `doing` something to a transient/permanent error."""
    if isinstance(error, asyncpg.PostgresError):
        sqlstate = str(getattr(error, "sqlstate", "") or "")
        message = f"{doing}: {type(error).__name__} [{sqlstate}]: {error}"
        if sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES:
            return TransientTargetError(message)
        return PermanentTargetError(message)
    if isinstance(error, (OSError, TimeoutError, asyncpg.InterfaceError)):
        return TransientTargetError(f"{doing}: target unreachable: {type(error).__name__}: {error}")
    # Anything else is unexpected; retrying (and eventually dead-lettering) is the safe
    # default because it never claims access was changed.
    return TransientTargetError(f"{doing}: unexpected {type(error).__name__}: {error}")
