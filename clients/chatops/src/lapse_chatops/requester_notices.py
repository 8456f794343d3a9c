"""What Lapse tells a requester about their own request and access, and how it looks in a
Slack DM and on the Teams webhook. Each event becomes one Notice, rendered per platform, so
Slack and Teams say the same thing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2

from lapse_chatops.replies import access_text, duration_text
from lapse_chatops.slack_blocks import Block, escape
from lapse_chatops.teams_cards import card_message


@dataclass(frozen=True)
class Notice:
    title: str
    lines: tuple[str, ...] = ()
    # The command that extends the access, for notices about access that will end.
    extend_with: str = ""


def extend_command(request_id: str, grant_id: str) -> str:
    return f"lapse extend {request_id} --grant {grant_id}"


def moment_text(stamp: Timestamp) -> str:
    return f"{stamp.ToDatetime(tzinfo=UTC):%Y-%m-%d %H:%M:%S} UTC"


def time_left_text(left: timedelta) -> str:
    seconds = max(0, round(left.total_seconds()))
    if seconds < 60:
        return "1 second" if seconds == 1 else f"{seconds} seconds"
    minutes = round(seconds / 60)
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


def _ids(request_id: str, grant_id: str) -> str:
    return f"request {request_id}, grant {grant_id}"


def decision_notice(decided: events_pb2.RequestDecided) -> Notice | None:
    """Approved, rejected or expired undecided; a request canceled by its requester (or an
    admin) is not news to them here."""
    access = ", ".join(access_text(item) for item in decided.items)
    detail = (f"Note: {decided.detail}",) if decided.detail else ()
    if decided.decision == common_pb2.REQUEST_STATUS_APPROVED:
        if decided.reason == common_pb2.REASON_AUTO_APPROVAL:
            by = f"automatically by flow {decided.flow}" if decided.flow else "automatically"
        else:
            by = f"by {decided.decided_by}"
        return Notice(
            title=f"Your request {decided.request_id} was approved {by}",
            lines=(
                f"Access: {access} for {duration_text(decided.duration_seconds)}",
                *detail,
                "You will be told when the access is active.",
            ),
        )
    if decided.decision == common_pb2.REQUEST_STATUS_REJECTED:
        return Notice(
            title=f"Your request {decided.request_id} was rejected by {decided.decided_by}",
            lines=(f"Access: {access}", *detail),
        )
    if decided.decision == common_pb2.REQUEST_STATUS_APPROVAL_EXPIRED:
        return Notice(
            title=f"Your request {decided.request_id} expired before its approvers decided",
            lines=(f"Access: {access}", *detail, "File it again if you still need it."),
        )
    return None


def extension_approved_notice(extension: events_pb2.ExtensionApproved) -> Notice:
    return Notice(
        title=(
            f"Your access was extended by {duration_text(extension.extend_by_seconds)} "
            f"(extension {extension.extension_number}, approved by {extension.approved_by})"
        ),
        lines=(_ids(extension.request_id, extension.grant_id),),
    )


_REFUSED = {
    common_pb2.REQUEST_STATUS_REJECTED: "was rejected",
    common_pb2.REQUEST_STATUS_APPROVAL_EXPIRED: "expired before its approvers decided",
    common_pb2.REQUEST_STATUS_CANCELED: "was withdrawn",
}


def extension_refused_notice(refused: events_pb2.ExtensionRefused) -> Notice:
    what = _REFUSED.get(refused.decision, "was not approved")
    by = f" by {refused.decided_by}" if refused.decided_by else ""
    which = f"extension {refused.extension_id}" if refused.extension_id else "extension"
    detail = (f"Note: {refused.detail}",) if refused.detail else ()
    return Notice(
        title=f"Your {which} {what}{by}",
        lines=(
            *detail,
            "The access keeps its current expiry.",
            _ids(refused.request_id, refused.grant_id),
        ),
    )


def grant_notice(fact: events_pb2.GrantStatusChanged) -> Notice | None:
    """The grant became active (the agent confirmed it), failed, or was shortened by a policy
    change. An extension's ACTIVE fact is left to ExtensionApproved, which says more."""
    access = access_text(fact.spec)
    ids = _ids(fact.request_id, fact.grant_id)
    if fact.status == common_pb2.GRANT_STATUS_ACTIVE and fact.reason == common_pb2.REASON_AGENT:
        return Notice(
            title=f"Your access is active: {access}",
            lines=(f"Expires {moment_text(fact.expires_at)}", ids),
            extend_with=extend_command(fact.request_id, fact.grant_id),
        )
    if (
        fact.status == common_pb2.GRANT_STATUS_ACTIVE
        and fact.reason == common_pb2.REASON_POLICY_CHANGE
    ):
        return Notice(
            title=f"Your access was shortened by a policy change: {access}",
            lines=(f"Now expires {moment_text(fact.expires_at)}", ids),
        )
    if fact.status == common_pb2.GRANT_STATUS_GRANT_FAILED:
        return Notice(
            title=f"Your access could not be granted: {access}",
            lines=(f"The agent said: {fact.detail or 'no reason given'}", ids),
        )
    return None


def expiring_soon_notice(reminder: events_pb2.GrantExpiringSoon, *, now: datetime) -> Notice | None:
    """None once the expiry has passed: the reminder came too late to be of use."""
    left = reminder.expires_at.ToDatetime(tzinfo=UTC) - now
    if left <= timedelta(0):
        return None
    return Notice(
        title=f"Your access ends in {time_left_text(left)}: {access_text(reminder.spec)}",
        lines=(
            f"Expires {moment_text(reminder.expires_at)}",
            _ids(reminder.request_id, reminder.grant_id),
        ),
        extend_with=extend_command(reminder.request_id, reminder.grant_id),
    )


def slack_blocks(notice: Notice) -> list[Block]:
    text = "\n".join([f"*{escape(notice.title)}*", *map(escape, notice.lines)])
    blocks: list[Block] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if notice.extend_with:
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"To extend it: `{escape(notice.extend_with)}`"}
                ],
            }
        )
    return blocks


def teams_message(notice: Notice, *, requester: str) -> dict[str, Any]:
    """Posted to a channel, not to the person: the card names who it is for."""
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "isSubtle": True, "wrap": True, "text": f"Lapse, for {requester}"},
        {
            "type": "TextBlock",
            "size": "Medium",
            "weight": "Bolder",
            "wrap": True,
            "text": notice.title,
        },
        *({"type": "TextBlock", "wrap": True, "text": line} for line in notice.lines),
    ]
    if notice.extend_with:
        body.append(
            {"type": "TextBlock", "wrap": True, "text": f"To extend it: `{notice.extend_with}`"}
        )
    return card_message(summary=f"Lapse, for {requester}: {notice.title}", body=body)
