"""Slack messages (Block Kit) for approvers: the request with Approve / Reject buttons, and
the same message once someone decided."""

from __future__ import annotations

from typing import Any

from lapse_common.pb.lapse.v1 import request_service_pb2

from lapse_chatops.replies import duration_text, items_text
from lapse_chatops.slack_payloads import APPROVE_ACTION, REJECT_ACTION

DECISION_BLOCK_ID = "lapse_decision"
Block = dict[str, Any]


def escape(text: str) -> str:
    """Slack mrkdwn control characters: keeps `<!channel>` or links in a reason inert."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def approval_request_text(view: request_service_pb2.AccessRequestView) -> str:
    return f"{view.requester} asks for {items_text(view)} ({view.request_id})"


def approval_request_blocks(
    view: request_service_pb2.AccessRequestView, *, approval_mode: str | None
) -> list[Block]:
    why = escape(view.justification) if view.justification else "_no reason given_"
    mode = f" ({approval_mode})" if approval_mode else ""
    lines = [
        f"*{escape(view.requester)}* asks for access: approval needed",
        f"`{escape(items_text(view))}` for {duration_text(view.duration_seconds)}",
        f"> {why}",
        f"flow `{escape(view.flow)}`{mode} · `{view.request_id}`",
    ]
    return [
        {
            "type": "section",
            "block_id": "lapse_request",
            "text": {"type": "mrkdwn", "text": "\n".join(lines)},
        },
        {
            "type": "actions",
            "block_id": DECISION_BLOCK_ID,
            "elements": [
                {
                    "type": "button",
                    "action_id": APPROVE_ACTION,
                    "text": {"type": "plain_text", "text": "Approve"},
                    "style": "primary",
                    "value": view.request_id,
                },
                {
                    "type": "button",
                    "action_id": REJECT_ACTION,
                    "text": {"type": "plain_text", "text": "Reject"},
                    "style": "danger",
                    "value": view.request_id,
                    "confirm": {
                        "title": {"type": "plain_text", "text": "Reject this request?"},
                        "text": {"type": "plain_text", "text": "Any rejection rejects it."},
                        "confirm": {"type": "plain_text", "text": "Reject"},
                        "deny": {"type": "plain_text", "text": "Cancel"},
                        "style": "danger",
                    },
                },
            ],
        },
    ]


def decision_note(*, user_id: str, subject: str, approve: bool, status: str) -> str:
    verb = "approved" if approve else "rejected"
    mark = ":white_check_mark:" if approve else ":x:"
    if status == "PENDING_APPROVAL":
        return f"{mark} <@{user_id}> ({escape(subject)}) {verb}; more approvals are needed"
    return f"{mark} <@{user_id}> ({escape(subject)}) {verb}: request is now *{escape(status)}*"


def decided_blocks(original: list[Block], *, note: str, still_open: bool) -> list[Block]:
    """The original message with a note of who decided; the buttons stay only while the
    request still waits for more votes."""
    kept = [b for b in original if still_open or b.get("block_id") != DECISION_BLOCK_ID]
    context: Block = {"type": "context", "elements": [{"type": "mrkdwn", "text": note}]}
    actions = [i for i, b in enumerate(kept) if b.get("block_id") == DECISION_BLOCK_ID]
    if actions:
        return [*kept[: actions[0]], context, *kept[actions[0] :]]
    return [*kept, context]
