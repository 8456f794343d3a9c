"""A connector whose target is a set of held accesses, for the agent's unit tests."""

from __future__ import annotations

from lapse_agent.connectors.base import (
    Access,
    Change,
    Holding,
    PrivilegedPrincipals,
    Verification,
)

from services.agent.tests.agent_commands import INTEGRATION_ID


class InMemoryConnector:
    """A target that is a set of held accesses; `fail_with` makes the next call raise."""

    def __init__(self) -> None:
        self.held: set[Access] = set()
        self.fail_with: Exception | None = None
        self.revoke_is_ignored = False
        self.calls: list[str] = []
        # Open sessions per principal; a revoke asked to end sessions closes them.
        self.sessions: dict[str, int] = {}
        # What the target reports as beyond a JIT grant; reads are counted apart from
        # `calls`, which lists what touched the access itself.
        self.superusers: set[str] = set()
        self.agent_login = "lapse_agent"
        self.privileged_reads = 0

    @property
    def integration_id(self) -> str:
        return INTEGRATION_ID

    def _maybe_fail(self, call: str) -> None:
        self.calls.append(call)
        if self.fail_with is not None:
            raise self.fail_with

    async def grant(self, access: Access) -> Change:
        self._maybe_fail("grant")
        if access in self.held:
            return Change(changed=False, note="already held")
        self.held.add(access)
        return Change(changed=True, note="granted")

    async def revoke(self, access: Access, *, end_sessions: bool = False) -> Change:
        self._maybe_fail("revoke")
        changed = access in self.held
        if changed and not self.revoke_is_ignored:
            self.held.discard(access)
        note = "revoked" if changed else "not held"
        if end_sessions:
            # Like the real connector: also when the access was already gone.
            note += f"; ended {self.sessions.pop(access.principal, 0)} session(s)"
        return Change(changed=changed, note=note)

    async def verify(self, access: Access) -> Verification:
        self._maybe_fail("verify")
        holds = access in self.held
        return Verification(holds=holds, detail="held" if holds else "absent")

    async def discover(self, *, resource: str = "", permission: str = "") -> list[Holding]:
        self._maybe_fail("discover")
        return [Holding(access=a, target_object="role") for a in sorted(self.held, key=str)]

    async def privileged_principals(self) -> PrivilegedPrincipals:
        self.privileged_reads += 1
        if self.fail_with is not None:
            raise self.fail_with
        return PrivilegedPrincipals(
            superusers=frozenset(self.superusers), agent_logins=frozenset({self.agent_login})
        )

    async def close(self) -> None:
        pass
