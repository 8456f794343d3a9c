"""What Slack posts to us, read into plain values. Slack sends slash commands as a form and
button clicks as a form field `payload` holding JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from lapse_chatops.payload_bounds import (
    MAX_FORM_FIELDS,
    MAX_ID_CHARS,
    MAX_MESSAGE_BLOCKS,
    MAX_TEXT_CHARS,
    MAX_URL_CHARS,
    MalformedPayload,
    bounded,
)

APPROVE_ACTION = "lapse_approve"
REJECT_ACTION = "lapse_reject"


class PayloadError(MalformedPayload):
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
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PayloadError("body is not UTF-8") from error
    try:
        fields = parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except ValueError as error:
        raise PayloadError(f"body has more than {MAX_FORM_FIELDS} form fields") from error
    return {name: values[0] for name, values in fields.items()}


def read_slash_command(body: bytes) -> SlashCommand:
    form = _form(body)
    if form.get("ssl_check") == "1":
        return SlashCommand(user_id="", user_name="", text="", ssl_check=True)
    if not form.get("user_id"):
        raise PayloadError("slash command without user_id")
    return SlashCommand(
        user_id=bounded("user_id", form["user_id"], limit=MAX_ID_CHARS),
        user_name=bounded("user_name", form.get("user_name", ""), limit=MAX_ID_CHARS),
        text=_unescape(bounded("text", form.get("text", ""), limit=MAX_TEXT_CHARS)),
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
    except RecursionError as error:
        # Thousands of nested brackets fit in the body cap; Slack never nests that deep.
        raise PayloadError("interaction payload is nested too deeply") from error
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions")
    if not isinstance(actions, list):
        actions = []
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
    user = _object(payload, "user")
    container = _object(payload, "container")
    channel = _object(payload, "channel")
    message = _object(payload, "message")
    user_id = _text(user.get("id"), "user.id")
    request_id = _text(action.get("value"), "actions[].value")
    if not user_id or not request_id:
        raise PayloadError("button click without a user id or request id")
    blocks = message.get("blocks")
    kept_blocks = [b for b in blocks if isinstance(b, dict)] if isinstance(blocks, list) else []
    if len(kept_blocks) > MAX_MESSAGE_BLOCKS:
        raise PayloadError(
            f"message.blocks has {len(kept_blocks)} blocks (at most {MAX_MESSAGE_BLOCKS})"
        )
    return ButtonClick(
        user_id=user_id,
        user_name=_text(user.get("username") or user.get("name"), "user.username"),
        approve=action["action_id"] == APPROVE_ACTION,
        request_id=request_id,
        channel_id=_text(container.get("channel_id") or channel.get("id"), "channel.id"),
        message_ts=_text(container.get("message_ts") or message.get("ts"), "message.ts"),
        message_blocks=kept_blocks,
        response_url=_text(payload.get("response_url"), "response_url", limit=MAX_URL_CHARS),
    )


def _object(payload: dict[str, Any], field: str) -> dict[str, Any]:
    value = payload.get(field) or {}
    if not isinstance(value, dict):
        raise PayloadError(f"{field} is not an object")
    return value


def _text(value: object, field: str, *, limit: int = MAX_ID_CHARS) -> str:
    if value is None:
        return ""
    if not isinstance(value, str | int):
        raise PayloadError(f"{field} is not a string")
    return bounded(field, str(value), limit=limit)
