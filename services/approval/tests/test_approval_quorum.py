"""Quorum rules and approval policy validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from lapse_approval.flows import ApprovalPolicy
from lapse_approval.operations.evaluate_quorum import Vote, eligible_tier, outcome
from pydantic import ValidationError

T0 = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


def policy(**fields: Any) -> ApprovalPolicy:
    return ApprovalPolicy.model_validate(fields)


@pytest.mark.parametrize(
    ("fields", "votes", "expected"),
    [
        ({"mode": "any_of", "approvers": {"users": ["a", "b"]}}, [], None),
        ({"mode": "any_of", "approvers": {"users": ["a", "b"]}}, [Vote("b", True, "base")], True),
        ({"mode": "all_of", "approvers": {"users": ["a", "b"]}}, [Vote("a", True, "base")], None),
        (
            {"mode": "all_of", "approvers": {"users": ["a", "b"]}},
            [Vote("a", True, "base"), Vote("b", True, "base")],
            True,
        ),
        (
            {"mode": "n_of_m", "required": 2, "approvers": {"users": ["a", "b", "c"]}},
            [Vote("c", True, "base")],
            None,
        ),
        (
            {"mode": "n_of_m", "required": 2, "approvers": {"users": ["a", "b", "c"]}},
            [Vote("c", True, "base"), Vote("a", True, "base")],
            True,
        ),
        (
            {"mode": "n_of_m", "required": 2, "approvers": {"users": ["a", "b", "c"]}},
            [Vote("c", True, "base"), Vote("a", False, "base")],
            False,
        ),
        (
            {
                "mode": "all_of",
                "approvers": {"users": ["a", "b"]},
                "escalation": [{"after": "1h", "approvers": {"users": ["m"]}}],
            },
            [Vote("m", True, "1h")],
            True,
        ),
    ],
)
def test_outcome(fields: dict[str, Any], votes: list[Vote], expected: bool | None) -> None:
    assert outcome(policy(**fields), votes) is expected


def test_escalated_approvers_become_eligible_after_their_interval() -> None:
    rules = policy(
        mode="any_of",
        approvers={"groups": ["dba"]},
        escalation=[{"after": "10m", "approvers": {"users": ["manager"]}}],
    )
    assert eligible_tier(rules, subject="x", groups=("dba",), submitted_at=T0, now=T0) == "base"
    assert (
        eligible_tier(
            rules, subject="manager", groups=(), submitted_at=T0, now=T0 + timedelta(minutes=9)
        )
        is None
    )
    assert (
        eligible_tier(
            rules, subject="manager", groups=(), submitted_at=T0, now=T0 + timedelta(minutes=10)
        )
        == "10m"
    )
    assert eligible_tier(rules, subject="y", groups=("sales",), submitted_at=T0, now=T0) is None


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"mode": "any_of"}, "needs approvers"),
        ({"mode": "auto", "approvers": {"users": ["a"]}}, "takes no approvers"),
        ({"mode": "all_of", "approvers": {"groups": ["dba"]}}, "needs named users"),
        ({"mode": "n_of_m", "required": 1, "approvers": {"users": ["a", "b"]}}, "required >= 2"),
        (
            {"mode": "n_of_m", "required": 3, "approvers": {"users": ["a", "b"]}},
            "more than the 2 approvers",
        ),
        (
            {
                "mode": "any_of",
                "approvers": {"users": ["a"]},
                "timeout": "1h",
                "escalation": [{"after": "2h", "approvers": {"users": ["m"]}}],
            },
            "before the timeout",
        ),
        ({"mode": "any_of", "approvers": {"users": ["a"]}, "timeout": "soon"}, "not a duration"),
    ],
)
def test_invalid_policies_say_why(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        policy(**fields)
