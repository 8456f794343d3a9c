"""What a Teams outgoing webhook posts to us: a Bot Framework activity whose text carries the
@mention as HTML (`<at>Lapse</at> request ...`)."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lapse_chatops.payload_bounds import MAX_ID_CHARS, MAX_TEXT_CHARS, MalformedPayload, bounded

_MENTION = re.compile(r"<at>.*?</at>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


class ActivityError(MalformedPayload):
    pass


@dataclass(frozen=True)
class TeamsMessage:
    # The activity's own id: what makes one delivery recognisable when it comes again.
    activity_id: str
    # When Teams sent it (inside the signed body, so it bounds replays of a captured call).
    sent_at: datetime
    # The stable ids of the sender: the Azure AD object id and the Teams user id (`29:...`).
    # The display name is neither stable nor unique and is not read at all.
    aad_object_id: str
    user_id: str
    text: str


def command_text(text: str) -> str:
    """The command the person typed, without the @mention, markup or entities."""
    without_mention = _MENTION.sub(" ", text)
    plain = html.unescape(_TAG.sub(" ", without_mention))
    return " ".join(plain.replace("\xa0", " ").split())


def _text(container: dict[str, Any], field: str, *, shown_as: str, limit: int) -> str:
    value = container.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ActivityError(f"{shown_as} is not a string")
    return bounded(shown_as, value, limit=limit)


def _sent_at(activity: dict[str, Any]) -> datetime:
    stamp = _text(activity, "timestamp", shown_as="timestamp", limit=MAX_ID_CHARS)
    if not stamp:
        # Without it nothing bounds how long a captured activity stays usable.
        raise ActivityError("activity without a timestamp")
    try:
        sent_at = datetime.fromisoformat(stamp)
    except ValueError as error:
        raise ActivityError(f"timestamp {stamp[:40]!r} is not ISO 8601") from error
    if sent_at.tzinfo is None:
        sent_at = sent_at.replace(tzinfo=UTC)
    return sent_at


def read_activity(body: bytes) -> TeamsMessage:
    try:
        activity = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ActivityError(f"body is not JSON: {error}") from error
    except RecursionError as error:
        raise ActivityError("body is nested too deeply") from error
    if not isinstance(activity, dict):
        raise ActivityError("body is not a JSON object")
    sender = activity.get("from") or {}
    if not isinstance(sender, dict):
        raise ActivityError("`from` is not an object")
    activity_id = _text(activity, "id", shown_as="id", limit=MAX_ID_CHARS)
    if not activity_id:
        raise ActivityError("activity without an id")
    return TeamsMessage(
        activity_id=activity_id,
        sent_at=_sent_at(activity),
        aad_object_id=_text(sender, "aadObjectId", shown_as="from.aadObjectId", limit=MAX_ID_CHARS),
        user_id=_text(sender, "id", shown_as="from.id", limit=MAX_ID_CHARS),
        text=command_text(_text(activity, "text", shown_as="text", limit=MAX_TEXT_CHARS)),
    )
