"""Proof that an inbound call really comes from Slack or Teams. Anything unproven is refused
before its body is even parsed."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable
from datetime import datetime

from slack_sdk.signature import Clock, SignatureVerifier

from lapse_chatops.payload_bounds import MAX_ID_CHARS

# Slack's own limit, and the one its SDK's verifier applies: a signed request older (or newer)
# than this may be a replay.
SLACK_MAX_AGE_SECONDS = 5 * 60
# Teams signs no timestamp header; the activity's own `timestamp` is inside the signed body.
TEAMS_MAX_AGE_SECONDS = 5 * 60


class SignatureRejected(Exception):
    """The request is not proven to come from the chat platform; the message says why."""


class _CallableClock(Clock):
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()


class SlackSignatures:
    """X-Slack-Signature (v0 HMAC-SHA256 over `v0:{timestamp}:{body}`) and the 5-minute window
    on X-Slack-Request-Timestamp, checked by the Slack SDK's verifier. This class only turns
    its yes/no into a reason a log reader can act on, and keeps malformed headers (which the
    SDK would raise on) from reaching it."""

    def __init__(self, *, signing_secret: str, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._verifier = SignatureVerifier(signing_secret, clock=_CallableClock(now))

    def verify(self, *, body: bytes, timestamp: str | None, signature: str | None) -> int:
        """The proven call's timestamp (seconds since the epoch)."""
        if not timestamp or not signature:
            raise SignatureRejected("missing X-Slack-Request-Timestamp or X-Slack-Signature")
        if len(timestamp) > 20 or not timestamp.isascii() or not timestamp.isdigit():
            raise SignatureRejected("X-Slack-Request-Timestamp is not a number")
        # compare_digest raises on non-ASCII text instead of answering no.
        if len(signature) > MAX_ID_CHARS or not signature.isascii():
            raise SignatureRejected("X-Slack-Signature does not match the body")
        try:
            # The SDK signs the body as text; a body that is not UTF-8 was not sent by Slack.
            body.decode("utf-8")
        except UnicodeDecodeError as error:
            raise SignatureRejected("X-Slack-Signature does not match the body") from error
        if self._verifier.is_valid(body=body, timestamp=timestamp, signature=signature):
            return int(timestamp)
        age = int(self._now()) - int(timestamp)
        if abs(age) > SLACK_MAX_AGE_SECONDS:
            raise SignatureRejected(
                f"X-Slack-Request-Timestamp is {age}s away from now "
                f"(more than {SLACK_MAX_AGE_SECONDS}s): possible replay"
            )
        raise SignatureRejected("X-Slack-Signature does not match the body")


def decode_teams_secret(secret: str) -> bytes:
    """The security token Teams shows for an outgoing webhook is base64."""
    try:
        key = base64.b64decode(secret.strip(), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError("the Teams HMAC secret is not base64") from error
    if not key:
        raise ValueError("the Teams HMAC secret is empty")
    return key


def verify_teams_hmac(*, key: bytes, body: bytes, authorization: str | None) -> None:
    """Authorization: `HMAC ` + base64(HMAC-SHA256(key, raw body))."""
    if not authorization:
        raise SignatureRejected("missing Authorization header")
    scheme, _, provided = authorization.strip().partition(" ")
    if scheme.upper() != "HMAC" or not provided.strip():
        raise SignatureRejected("Authorization header is not `HMAC <signature>`")
    expected = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest())
    if not hmac.compare_digest(expected, provided.strip().encode()):
        raise SignatureRejected("HMAC signature does not match the body")


def verify_teams_freshness(*, sent_at: datetime, now: datetime) -> None:
    """Refuse a signed activity replayed long after Teams sent it, or dated in the future."""
    age = (now - sent_at).total_seconds()
    if abs(age) > TEAMS_MAX_AGE_SECONDS:
        raise SignatureRejected(
            f"activity timestamp is {int(age)}s away from now "
            f"(more than {TEAMS_MAX_AGE_SECONDS}s): possible replay"
        )
