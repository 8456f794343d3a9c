"""What Slack posts to us, read into plain values. Slack sends slash commands as a form and
button clicks as a form field `payload` holding JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

APPROVE_ACTION = "lapse_approve"
REJECT_ACTION = "lapse_reject"


class PayloadError(ValueError):
    pass


@dataclass(frozen=True)
class SlashCommand:
    user_id: str
    user_name: str
    text: str
    ssl_check: bool = False


@dataclass(frozen=True)
class ButtonClick:
    user_id: str
    user_name: str
    approve: bool
    request_id: str
    channel_id: str
    message_ts: str
    # The clicked message as Slack shows it, so it can be updated without keeping state.
    message_blocks: list[dict[str, Any]]
    response_url: str


def _unescape(text: str) -> str:
    # Slack escapes exactly these three in text it sends; nothing else is HTML here.
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _form(body: bytes) -> dict[str, str]:
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError as error:
        raise PayloadError("body is not UTF-8") from error
    return {name: values[0] for name, values in fields.items()}


def read_slash_command(body: bytes) -> SlashCommand:
    form = _form(body)
    if form.get("ssl_check") == "1":
        return SlashCommand(user_id="", user_name="", text="", ssl_check=True)
    if not form.get("user_id"):
        raise PayloadError("slash command without user_id")
    return SlashCommand(
        user_id=form["user_id"],
        user_name=form.get("user_name", ""),
        text=_unescape(form.get("text", "")),
    )


def read_button_click(body: bytes) -> ButtonClick | None:
    """The Approve/Reject click in `body`, or None for any other interaction."""
    raw = _form(body).get("payload")
    if raw is None:
        raise PayloadError("interaction without a payload field")
    try:
        payload = json.loads(raw)
    except json.JSONDecodeError as error:
        raise PayloadError(f"interaction payload is not JSON: {error}") from error
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions") or []
    action = next(
        (
            a
            for a in actions
            if isinstance(a, dict) and a.get("action_id") in {APPROVE_ACTION, REJECT_ACTION}
        ),
        None,
    )
    if action is None:
        return None
    user = payload.get("user") or {}
    container = payload.get("container") or {}
    channel = payload.get("channel") or {}
    message = payload.get("message") or {}
    user_id = str(user.get("id", ""))
    request_id = str(action.get("value", ""))
    if not user_id or not request_id:
        raise PayloadError("button click without a user id or request id")
    blocks = message.get("blocks")
    return ButtonClick(
        user_id=user_id,
        user_name=str(user.get("username") or user.get("name") or ""),
        approve=action["action_id"] == APPROVE_ACTION,
        request_id=request_id,
        channel_id=str(container.get("channel_id") or channel.get("id") or ""),
        message_ts=str(container.get("message_ts") or message.get("ts") or ""),
        message_blocks=[b for b in blocks if isinstance(b, dict)]
        if isinstance(blocks, list)
        else [],
        response_url=str(payload.get("response_url", "")),
    )
