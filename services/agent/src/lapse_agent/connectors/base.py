"""What a connector can do, as small Protocols, and the errors it may raise.

A connector speaks the platform's vocabulary (resource, permission, principal) and maps
it to target-native objects itself. Every capability is idempotent: granting access that
already exists, or revoking access that is already gone, succeeds with `changed=False`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Access:
    """One permission on one resource for one principal (a login in the target)."""

    resource: str
    permission: str
    principal: str


@dataclass(frozen=True)
class Change:
    """What a grant or revoke did. `changed=False` means the target already was so."""

    changed: bool
    note: str


@dataclass(frozen=True)
class Holding:
    """Access found in the target by discovery; `target_object` is the native name
    (a PostgreSQL role, for instance)."""

    access: Access
    target_object: str


class TargetError(Exception):
    """A connector could not do what was asked; subclasses say whether retrying helps."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class TransientTargetError(TargetError):
    """Unreachable, timed out, overloaded: the same command may succeed later."""


class PermanentTargetError(TargetError):
    """Unknown resource/permission/login/role, missing privilege: retrying cannot fix it."""


@runtime_checkable
class Granter(Protocol):
    async def grant(self, access: Access) -> Change: ...


@runtime_checkable
class Revoker(Protocol):
    async def revoke(self, access: Access, *, end_sessions: bool = False) -> Change:
        """Remove the access. With `end_sessions` (panic, offboarding) also end the
        principal's open sessions, whatever the integration's own setting; the note says
        how many were ended. Ending sessions runs even when the access was already gone,
        so a retry after a partial failure still ends them."""
        ...


@dataclass(frozen=True)
class Verification:
    """What reading the target back showed: does the principal hold the access?"""

    holds: bool
    detail: str


@runtime_checkable
class Verifier(Protocol):
    async def verify(self, access: Access) -> Verification: ...


@runtime_checkable
class Discoverer(Protocol):
    async def discover(self, *, resource: str = "", permission: str = "") -> list[Holding]:
        """Everything this connector manages that is currently held (optionally narrowed
        to one resource and/or permission)."""
        ...


@dataclass(frozen=True)
class PrivilegedPrincipals:
    """Principals the target itself marks as beyond a JIT grant: its superusers, and the
    login the agent connects as (revoking from it could lock the agent out; granting to it
    would hand the agent more than it was set up with)."""

    superusers: frozenset[str]
    agent_logins: frozenset[str]


@runtime_checkable
class KnowsPrivilegedPrincipals(Protocol):
    """Optional: a connector that can read its target's superusers and its own login. The
    command execution path asks before every grant and revoke and refuses those principals;
    read fresh each time, so a superuser made since the agent connected is still refused."""

    async def privileged_principals(self) -> PrivilegedPrincipals: ...


class Connector(Granter, Revoker, Verifier, Discoverer, Protocol):
    """A full connector for one integration."""

    @property
    def integration_id(self) -> str: ...

    async def close(self) -> None: ...
