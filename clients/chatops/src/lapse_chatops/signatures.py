"""Proof that an inbound call really comes from Slack or Teams. Anything unproven is refused
before its body is even parsed."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from datetime import datetime

# Slack's own limit: a signed request older (or newer) than this may be a replay.
SLACK_MAX_AGE_SECONDS = 5 * 60
# Teams signs no timestamp header; the activity's own `timestamp` is inside the signed body.
TEAMS_MAX_AGE_SECONDS = 5 * 60


class SignatureRejected(Exception):
    """The request is not proven to come from the chat platform; the message says why."""


def verify_slack_signature(
    *,
    signing_secret: str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    now: float,
) -> None:
    """X-Slack-Signature: `v0=` + hex HMAC-SHA256 over `v0:{timestamp}:{body}`."""
    if not timestamp or not signature:
        raise SignatureRejected("missing X-Slack-Request-Timestamp or X-Slack-Signature")
    try:
        sent_at = int(timestamp)
    except ValueError as error:
        raise SignatureRejected("X-Slack-Request-Timestamp is not a number") from error
    if abs(now - sent_at) > SLACK_MAX_AGE_SECONDS:
        raise SignatureRejected(
            f"X-Slack-Request-Timestamp is {int(now - sent_at)}s away from now "
            f"(more than {SLACK_MAX_AGE_SECONDS}s): possible replay"
        )
    # Over the raw bytes: a body that is not UTF-8 is simply a mismatch, never a crash.
    digest = hmac.new(
        signing_secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(f"v0={digest}".encode(), signature.encode()):
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


def verify_teams_freshness(*, sent_at: datetime | None, now: datetime) -> None:
    """Refuse a signed activity replayed long after Teams sent it."""
    if sent_at is None:
        return
    age = (now - sent_at).total_seconds()
    if abs(age) > TEAMS_MAX_AGE_SECONDS:
        raise SignatureRejected(
            f"activity timestamp is {int(age)}s away from now "
            f"(more than {TEAMS_MAX_AGE_SECONDS}s): possible replay"
        )
