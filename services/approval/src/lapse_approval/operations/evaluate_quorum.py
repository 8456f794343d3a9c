"""Who may decide a pending request now, and whether its votes decide it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lapse_approval.flows import ApprovalPolicy, parse_duration


@dataclass(frozen=True)
class Vote:
    approver: str
    approve: bool
    tier: str


def eligible_tier(
    policy: ApprovalPolicy,
    *,
    subject: str,
    groups: tuple[str, ...],
    submitted_at: datetime,
    now: datetime,
) -> str | None:
    """'base' for the flow's approvers, the escalation interval for an escalated tier the
    approver belongs to once that interval has passed, None if they may not decide."""
    if policy.approvers.include(subject=subject, groups=groups):
        return "base"
    for tier in policy.escalation:
        if now >= submitted_at + parse_duration(tier.after) and tier.approvers.include(
            subject=subject, groups=groups
        ):
            return tier.after
    return None


def outcome(policy: ApprovalPolicy, votes: list[Vote]) -> bool | None:
    """True approved, False rejected, None still pending."""
    if any(not v.approve for v in votes):
        return False
    approvers = {v.approver for v in votes if v.approve}
    if any(v.tier != "base" for v in votes if v.approve):
        # An escalated tier decides on its own: one of them is enough.
        return True
    if policy.mode == "any_of":
        return bool(approvers) or None
    if policy.mode == "all_of":
        return set(policy.approvers.users) <= approvers or None
    if policy.mode == "n_of_m":
        return len(approvers) >= policy.required or None
    return True


def votes_needed(policy: ApprovalPolicy) -> int:
    return {"any_of": 1, "all_of": len(policy.approvers.users), "n_of_m": policy.required}.get(
        policy.mode, 0
    )
