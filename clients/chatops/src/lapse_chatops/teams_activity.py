"""What a Teams outgoing webhook posts to us: a Bot Framework activity whose text carries the
@mention as HTML (`<at>Lapse</at> request ...`)."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

_MENTION = re.compile(r"<at>.*?</at>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


class ActivityError(ValueError):
    pass


@dataclass(frozen=True)
class TeamsMessage:
    aad_object_id: str
    name: str
    text: str
    # When Teams sent it (inside the signed body, so it bounds replays of a captured call).
    sent_at: datetime | None = None


def command_text(text: str) -> str:
    """The command the person typed, without the @mention, markup or entities."""
    without_mention = _MENTION.sub(" ", text)
    plain = html.unescape(_TAG.sub(" ", without_mention))
    return " ".join(plain.replace("\xa0", " ").split())


def read_activity(body: bytes) -> TeamsMessage:
    try:
        activity = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ActivityError(f"body is not JSON: {error}") from error
    if not isinstance(activity, dict):
        raise ActivityError("body is not a JSON object")
    sender = activity.get("from") or {}
    if not isinstance(sender, dict):
        raise ActivityError("`from` is not an object")
    sent_at: datetime | None = None
    if activity.get("timestamp"):
        try:
            sent_at = datetime.fromisoformat(str(activity["timestamp"]))
        except ValueError as error:
            raise ActivityError(f"timestamp {activity['timestamp']!r} is not ISO 8601") from error
        if sent_at.tzinfo is None:
            sent_at = sent_at.replace(tzinfo=UTC)
    return TeamsMessage(
        aad_object_id=str(sender.get("aadObjectId") or ""),
        name=str(sender.get("name") or ""),
        text=command_text(str(activity.get("text") or "")),
        sent_at=sent_at,
    )
