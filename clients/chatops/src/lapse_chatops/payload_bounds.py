"""Size limits on what Slack and Teams post to us, checked before any work is done on it.

Real payloads are a few KiB: a slash command's text is at most a few thousand characters and
Slack ids are about ten. The limits are generous for them and small enough that nothing an
attacker sends (after a valid signature, or before one) can cost more than a bounded parse.
"""

from __future__ import annotations

# Whole HTTP body; anything larger is answered 413 before it is read to the end.
MAX_BODY_BYTES = 64 * 1024
# What a person typed (Slack `text`, Teams `text` with its mention markup).
MAX_TEXT_CHARS = 4096
# Slack user/channel ids, message ts, Teams object ids, activity ids, timestamps.
MAX_ID_CHARS = 256
# Slack's response_url.
MAX_URL_CHARS = 2048
# Form fields in a Slack post (a slash command has about 15).
MAX_FORM_FIELDS = 64
# Blocks of the clicked message we echo back in chat.update (Slack allows 50 per message).
MAX_MESSAGE_BLOCKS = 50


class MalformedPayload(ValueError):
    """The body is not what Slack or Teams sends; the message names the field."""


def bounded(field: str, value: str, *, limit: int) -> str:
    if len(value) > limit:
        raise MalformedPayload(f"{field} is {len(value)} characters long (at most {limit})")
    return value
