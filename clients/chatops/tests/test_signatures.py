"""Only calls signed by Slack or Teams get through: good, tampered, stale and missing."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
from lapse_chatops.signatures import (
    SignatureRejected,
    SlackSignatures,
    decode_teams_secret,
    verify_teams_freshness,
    verify_teams_hmac,
)
from slack_sdk.signature import Clock, SignatureVerifier

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BODY = b"token=x&team_id=T1&user_id=U1&command=%2Flapse&text=request+demo-pg%2Fappdb+read"
NOW = 1_900_000_000.0


def slack_sign(body: bytes, timestamp: str, secret: str = SECRET) -> str:
    # Slack's documented recipe, written out independently of the code under test.
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify(body: bytes, timestamp: str | None, signature: str | None, now: float = NOW) -> int:
    return SlackSignatures(signing_secret=SECRET, now=lambda: now).verify(
        body=body, timestamp=timestamp, signature=signature
    )


class FixedClock(Clock):
    def now(self) -> float:
        return NOW


def test_slack_signature_accepted() -> None:
    stamp = str(int(NOW))
    signature = slack_sign(BODY, stamp)
    assert verify(BODY, stamp, signature) == int(NOW)
    # The Slack SDK's reference verifier agrees.
    assert SignatureVerifier(SECRET, clock=FixedClock()).is_valid(BODY, stamp, signature)


def test_slack_signature_within_five_minutes_accepted() -> None:
    stamp = str(int(NOW) - 299)
    verify(BODY, stamp, slack_sign(BODY, stamp))


@pytest.mark.parametrize(
    ("body", "timestamp", "signature", "message"),
    [
        (BODY, None, "v0=abc", "missing X-Slack-Request-Timestamp or X-Slack-Signature"),
        (BODY, str(int(NOW)), None, "missing X-Slack-Request-Timestamp or X-Slack-Signature"),
        (BODY, "", "", "missing"),
        (BODY, "yesterday", "v0=abc", "X-Slack-Request-Timestamp is not a number"),
        (BODY, "-1", "v0=abc", "X-Slack-Request-Timestamp is not a number"),
        (BODY, "1" * 4000, "v0=abc", "X-Slack-Request-Timestamp is not a number"),
        (BODY, "\u0661\u0662", "v0=abc", "X-Slack-Request-Timestamp is not a number"),
        (BODY, str(int(NOW)), "v0=" + "a" * 5000, "does not match"),
        (BODY, str(int(NOW)), "v0=\u00e9" + "a" * 63, "does not match"),
        (BODY, str(int(NOW)), "v0=" + "0" * 64, "X-Slack-Signature does not match the body"),
        (BODY + b"&x=1", str(int(NOW)), slack_sign(BODY, str(int(NOW))), "does not match"),
        (BODY, str(int(NOW)), slack_sign(BODY, str(int(NOW)), "other-secret"), "does not match"),
        (BODY, str(int(NOW) - 1), slack_sign(BODY, str(int(NOW))), "does not match"),
        (b"\xff\xfe not utf-8", str(int(NOW)), slack_sign(BODY, str(int(NOW))), "does not match"),
    ],
)
def test_slack_signature_refused(
    body: bytes, timestamp: str | None, signature: str | None, message: str
) -> None:
    with pytest.raises(SignatureRejected) as refused:
        verify(body, timestamp, signature)
    assert message in str(refused.value)


@pytest.mark.parametrize("age", [301, 3600, -301])
def test_stale_or_future_slack_signature_refused(age: int) -> None:
    stamp = str(int(NOW) - age)
    with pytest.raises(SignatureRejected) as refused:
        verify(BODY, stamp, slack_sign(BODY, stamp))
    assert "possible replay" in str(refused.value)


TEAMS_KEY = b"teams outgoing webhook secret!!!"
TEAMS_SECRET = base64.b64encode(TEAMS_KEY).decode()
ACTIVITY = b'{"type":"message","text":"<at>Lapse</at> request demo-pg/appdb read as alice"}'


def teams_sign(body: bytes, key: bytes = TEAMS_KEY) -> str:
    return "HMAC " + base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()


def test_teams_hmac_accepted() -> None:
    verify_teams_hmac(
        key=decode_teams_secret(TEAMS_SECRET), body=ACTIVITY, authorization=teams_sign(ACTIVITY)
    )


@pytest.mark.parametrize(
    ("body", "authorization", "message"),
    [
        (ACTIVITY, None, "missing Authorization header"),
        (ACTIVITY, "", "missing Authorization header"),
        (ACTIVITY, "Bearer abc", "Authorization header is not `HMAC <signature>`"),
        (ACTIVITY, "HMAC ", "Authorization header is not `HMAC <signature>`"),
        (ACTIVITY, teams_sign(ACTIVITY, b"another key"), "HMAC signature does not match the body"),
        (ACTIVITY + b" ", teams_sign(ACTIVITY), "HMAC signature does not match the body"),
        (ACTIVITY, "HMAC not-base64!", "HMAC signature does not match the body"),
    ],
)
def test_teams_hmac_refused(body: bytes, authorization: str | None, message: str) -> None:
    with pytest.raises(SignatureRejected) as refused:
        verify_teams_hmac(key=TEAMS_KEY, body=body, authorization=authorization)
    assert message in str(refused.value)


@pytest.mark.parametrize("secret", ["not base64!", ""])
def test_teams_secret_must_be_base64(secret: str) -> None:
    with pytest.raises(ValueError, match="Teams HMAC secret"):
        decode_teams_secret(secret)


def test_teams_activity_within_five_minutes_accepted() -> None:
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    verify_teams_freshness(sent_at=now - timedelta(seconds=299), now=now)
    verify_teams_freshness(sent_at=now + timedelta(seconds=299), now=now)


@pytest.mark.parametrize("age", [301, 86400, 365 * 86400, -301])
def test_replayed_teams_activity_refused(age: int) -> None:
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    with pytest.raises(SignatureRejected, match="possible replay"):
        verify_teams_freshness(sent_at=now - timedelta(seconds=age), now=now)
