"""Calls as Slack and Teams sign them, written out from their documentation independently of
the code under test; shared by the endpoint tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import urlencode

SLACK_SECRET = "slack-signing-secret"
TEAMS_KEY = b"teams-key-0123456789"


def slack_headers(body: bytes, *, age: int = 0, secret: str = SLACK_SECRET) -> dict[str, str]:
    stamp = str(int(time.time()) - age)
    digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={digest.hexdigest()}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def teams_headers(body: bytes, key: bytes = TEAMS_KEY) -> dict[str, str]:
    signature = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()
    return {"Authorization": f"HMAC {signature}", "Content-Type": "application/json"}


def command(user: str, text: str) -> bytes:
    return urlencode({"user_id": user, "command": "/lapse", "text": text}).encode()
