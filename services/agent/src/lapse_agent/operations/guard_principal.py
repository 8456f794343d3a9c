"""Whether a grant or revoke may touch this principal at all, decided before the connector
runs anything that changes the target.

Every connector goes through here (from `execute_command`), so a new connector cannot
forget the check. The configured rules and the built-in names need no target access; the
target's superusers and the agent's own login are read from connectors that know them
(`KnowsPrivilegedPrincipals`), right before the change, with a read-only query.
"""

from __future__ import annotations

from lapse_agent.connectors.base import Connector, KnowsPrivilegedPrincipals
from lapse_agent.principal_rules import PrincipalRules


async def principal_refusal(
    *, principal: str, rules: PrincipalRules, connector: Connector
) -> str | None:
    """Why the principal must not be granted to or revoked from, or None.

    Raises the connector's TargetError if the target cannot say who its superusers are:
    not knowing is no reason to go ahead.
    """
    integration_id = connector.integration_id
    by_name = rules.refusal(principal, integration_id=integration_id)
    if by_name is not None:
        return by_name
    if not isinstance(connector, KnowsPrivilegedPrincipals):
        return None
    privileged = await connector.privileged_principals()
    if principal in privileged.superusers:
        return (
            f"refused: principal {principal!r} is a superuser in integration {integration_id}; "
            "this agent never grants to or revokes from superusers"
        )
    if principal in privileged.agent_logins:
        return (
            f"refused: principal {principal!r} is the login this agent uses for integration "
            f"{integration_id}; it never grants to or revokes from itself"
        )
    return None
