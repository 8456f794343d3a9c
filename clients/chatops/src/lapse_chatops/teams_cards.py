"""Teams messages: the approval notification posted to the incoming webhook, and the
Adaptive Card message wrapping every notification."""

from __future__ import annotations

from typing import Any

from lapse_common.pb.lapse.v1 import request_service_pb2

from lapse_chatops.replies import duration_text, items_text


def review_link(console_url: str, request_id: str) -> str:
    return f"{console_url.rstrip('/')}/requests/{request_id}"


def approval_card(
    view: request_service_pb2.AccessRequestView, *, console_url: str, approval_mode: str | None
) -> dict[str, Any]:
    link = review_link(console_url, view.request_id)
    flow = f"{view.flow} ({approval_mode})" if approval_mode else view.flow
    return card_message(
        summary=f"Lapse: approval needed for {view.request_id}",
        body=[
            {
                "type": "TextBlock",
                "size": "Medium",
                "weight": "Bolder",
                "wrap": True,
                "text": f"Lapse: {view.requester} asks for access, approval needed",
            },
            {
                "type": "FactSet",
                "facts": [
                    {"title": "Request", "value": view.request_id},
                    {"title": "Access", "value": items_text(view)},
                    {"title": "For", "value": duration_text(view.duration_seconds)},
                    {"title": "Why", "value": view.justification or "(no reason given)"},
                    {"title": "Flow", "value": flow},
                ],
            },
            {
                "type": "TextBlock",
                "wrap": True,
                "text": f"Approve or reject at {link} or with `lapse approve {view.request_id}`",
            },
        ],
        actions=[{"type": "Action.OpenUrl", "title": "Review in Lapse", "url": link}],
    )


def card_message(
    *, summary: str, body: list[dict[str, Any]], actions: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """An Adaptive Card message: accepted by classic incoming webhooks and by Workflows."""
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    if actions:
        card["actions"] = actions
    return {
        "type": "message",
        "summary": summary,
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }
