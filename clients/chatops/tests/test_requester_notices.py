"""What requesters are told about their requests and access, in Slack and Teams, and how the
notifier picks the people and channels, survives chat outages and skips stale news."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from google.protobuf.message import Message
from lapse_chatops.app import requester_feed
from lapse_chatops.delivery import ChatDeliveryFailed
from lapse_chatops.directory import Directory, DirectoryFile
from lapse_chatops.operations.notify_requester import RequesterNotifier
from lapse_chatops.requester_feed import RequesterFeed
from lapse_chatops.requester_notices import (
    decision_notice,
    expiring_soon_notice,
    extension_approved_notice,
    extension_refused_notice,
    grant_notice,
    slack_blocks,
    teams_message,
)
from lapse_chatops.settings import ChatopsSettings
from lapse_common.clock import ManualClock
from lapse_common.messaging.codec import DecodedEvent, build_envelope, decode
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.settings import KafkaSettings
from pydantic import SecretStr

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
SPEC = common_pb2.GrantSpec(
    integration_id="demo-pg",
    agent_id="demo-agent",
    resource="appdb",
    permission="read",
    principal="alice_login",
)


def decided(
    decision: common_pb2.RequestStatus.ValueType = common_pb2.REQUEST_STATUS_APPROVED,
) -> events_pb2.RequestDecided:
    return events_pb2.RequestDecided(
        request_id="req-1",
        decision=decision,
        decided_by="approver-a",
        reason=common_pb2.REASON_APPROVER,
        detail="approved in Slack by approver-a",
        flow="flow-g-any",
        requester="alice",
        items=[SPEC],
        duration_seconds=1800,
    )


def active(**changes: Any) -> events_pb2.GrantStatusChanged:
    fields: dict[str, Any] = {
        "grant_id": "grant-1",
        "request_id": "req-1",
        "status": common_pb2.GRANT_STATUS_ACTIVE,
        "epoch": 1,
        "spec": SPEC,
        "requester": "alice",
        "reason": common_pb2.REASON_AGENT,
        "actor": "agent:demo-agent",
    }
    fact = events_pb2.GrantStatusChanged(**{**fields, **changes})
    fact.expires_at.FromDatetime(NOW + timedelta(minutes=30))
    return fact


def expiring(left: timedelta) -> events_pb2.GrantExpiringSoon:
    reminder = events_pb2.GrantExpiringSoon(
        grant_id="grant-1", request_id="req-1", requester="alice", spec=SPEC, epoch=1
    )
    reminder.expires_at.FromDatetime(NOW + left)
    return reminder


def test_decisions_say_what_and_who() -> None:
    approved = decision_notice(decided())
    assert approved is not None
    assert approved.title == "Your request req-1 was approved by approver-a"
    assert approved.lines[0] == "Access: demo-pg/appdb read as alice_login for 30m"
    auto = decided()
    auto.reason = common_pb2.REASON_AUTO_APPROVAL
    assert (notice := decision_notice(auto)) is not None
    assert notice.title.endswith("approved automatically by flow flow-g-any")
    rejected = decided(common_pb2.REQUEST_STATUS_REJECTED)
    rejected.detail = "not during the freeze"
    assert (notice := decision_notice(rejected)) is not None
    assert notice.title == "Your request req-1 was rejected by approver-a"
    assert "Note: not during the freeze" in notice.lines
    expired = decision_notice(decided(common_pb2.REQUEST_STATUS_APPROVAL_EXPIRED))
    assert expired is not None and "expired before its approvers decided" in expired.title
    assert decision_notice(decided(common_pb2.REQUEST_STATUS_CANCELED)) is None


def test_active_access_says_when_it_ends_and_how_to_extend() -> None:
    notice = grant_notice(active())
    assert notice is not None
    assert notice.title == "Your access is active: demo-pg/appdb read as alice_login"
    assert notice.lines[0] == "Expires 2026-11-29 09:30:00 UTC"
    assert notice.extend_with == "lapse extend req-1 --grant grant-1"
    # An extension's own ACTIVE fact is announced by ExtensionApproved instead.
    assert grant_notice(active(reason=common_pb2.REASON_USER)) is None
    shortened = grant_notice(active(reason=common_pb2.REASON_POLICY_CHANGE))
    assert shortened is not None and "shortened" in shortened.title
    failed = grant_notice(
        active(status=common_pb2.GRANT_STATUS_GRANT_FAILED, detail="FAILED_PERMANENT: no login")
    )
    assert failed is not None and "could not be granted" in failed.title
    assert grant_notice(active(status=common_pb2.GRANT_STATUS_REVOKED)) is None


@pytest.mark.parametrize(
    ("left", "said"),
    [
        (timedelta(minutes=10), "10 minutes"),
        (timedelta(seconds=80), "1 minute"),
        (timedelta(seconds=15), "15 seconds"),
    ],
)
def test_expiring_soon_counts_down(left: timedelta, said: str) -> None:
    notice = expiring_soon_notice(expiring(left), now=NOW)
    assert notice is not None
    assert notice.title == f"Your access ends in {said}: demo-pg/appdb read as alice_login"
    assert notice.extend_with == "lapse extend req-1 --grant grant-1"


def test_a_reminder_after_the_expiry_says_nothing() -> None:
    assert expiring_soon_notice(expiring(timedelta(seconds=-1)), now=NOW) is None


def test_extensions() -> None:
    approved = extension_approved_notice(
        events_pb2.ExtensionApproved(
            request_id="req-1",
            grant_id="grant-1",
            extend_by_seconds=1800,
            approved_by="approver-a",
            extension_number=1,
        )
    )
    assert approved.title == (
        "Your access was extended by 30m (extension 1, approved by approver-a)"
    )
    refused = extension_refused_notice(
        events_pb2.ExtensionRefused(
            request_id="req-1",
            grant_id="grant-1",
            extension_id="ext-1",
            decision=common_pb2.REQUEST_STATUS_REJECTED,
            decided_by="approver-a",
        )
    )
    assert refused.title == "Your extension ext-1 was rejected by approver-a"
    assert "The access keeps its current expiry." in refused.lines


def test_slack_and_teams_renderings() -> None:
    rejected = decided(common_pb2.REQUEST_STATUS_REJECTED)
    rejected.detail = "<!channel> nope"
    notice = decision_notice(rejected)
    assert notice is not None
    text = json.dumps(slack_blocks(notice))
    assert "<!channel>" not in text and "&lt;!channel&gt; nope" in text
    active_notice = grant_notice(active())
    assert active_notice is not None
    blocks = slack_blocks(active_notice)
    assert blocks[-1]["type"] == "context"
    assert "`lapse extend req-1 --grant grant-1`" in blocks[-1]["elements"][0]["text"]

    message = teams_message(notice, requester="alice")
    assert message["summary"] == "Lapse, for alice: Your request req-1 was rejected by approver-a"
    card = message["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    texts = [block["text"] for block in card["content"]["body"]]
    assert texts[:2] == ["Lapse, for alice", "Your request req-1 was rejected by approver-a"]


# ---------------------------------------------------------------- the notifier

DIRECTORY = Directory.parse(
    """
slack:
  U0ALICE: {subject: alice}
  U0CAROL: {subject: carol}
teams:
  aad-alice: {subject: alice}
  aad-bob: {subject: bob}
""",
    source="test",
)


class Recording:
    """Stands in for Slack and Teams; fails the first `failures` calls."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls: list[dict[str, Any]] = []

    async def post_message(self, *, channel: str, text: str, blocks: list[dict[str, Any]]) -> str:
        return await self.post({"channel": channel, "text": text, "blocks": blocks})

    async def post(self, message: dict[str, Any]) -> str:
        if self.failures:
            self.failures -= 1
            raise ChatDeliveryFailed("HTTP 503")
        self.calls.append(message)
        return "1.0"


class FixedDirectory:
    current = DIRECTORY


def notifier(slack: Recording | None, teams: Recording | None) -> RequesterNotifier:
    return RequesterNotifier(
        directory=FixedDirectory(),
        slack=slack,
        teams=teams,
        clock=ManualClock(NOW),
        attempts=3,
        retry_seconds=0,
        max_age=timedelta(hours=1),
    )


def event(payload: Message, *, age: timedelta = timedelta(0)) -> DecodedEvent:
    envelope = build_envelope(payload, producer="test", occurred_at=NOW - age)
    return decode(envelope.SerializeToString())


async def test_slack_dm_to_the_requester_and_teams_naming_them() -> None:
    slack, teams = Recording(), Recording()
    assert await notifier(slack, teams).notify(event(active()))
    [dm] = slack.calls
    assert dm["channel"] == "U0ALICE"
    assert dm["text"] == "Your access is active: demo-pg/appdb read as alice_login"
    [posted] = teams.calls
    assert posted["summary"].startswith("Lapse, for alice: Your access is active")


async def test_each_person_only_where_they_can_be_reached() -> None:
    slack, teams = Recording(), Recording()
    notify = notifier(slack, teams).notify
    for who in ("bob", "carol", "dave"):
        await notify(event(active(requester=who)))
    assert [c["channel"] for c in slack.calls] == ["U0CAROL"]
    assert [c["summary"].split(":")[0] for c in teams.calls] == ["Lapse, for bob"]
    assert not await notifier(slack, teams).notify(event(active(requester="dave")))


async def test_failed_deliveries_are_retried_then_dropped() -> None:
    slack, teams = Recording(failures=2), Recording(failures=5)
    assert await notifier(slack, teams).notify(event(active()))
    assert len(slack.calls) == 1, "the third attempt got through"
    assert teams.calls == [] and teams.failures == 2, "three attempts, then dropped"


async def test_extensions_reach_the_requester_they_name() -> None:
    slack = Recording()
    notify = notifier(slack, None).notify
    extension = events_pb2.ExtensionApproved(
        request_id="req-1", grant_id="grant-1", extend_by_seconds=600, approved_by="lapse"
    )
    assert not await notify(event(extension)), "no requester named: nobody to tell"
    extension.requester = "alice"
    # Even with nothing seen before (a restarted front end), the event says whom to tell.
    assert await notify(event(extension))
    assert slack.calls[-1]["channel"] == "U0ALICE"
    assert slack.calls[-1]["text"].startswith("Your access was extended by 10m")


async def test_stale_or_uninteresting_events_send_nothing() -> None:
    slack = Recording()
    notify = notifier(slack, None).notify
    assert not await notify(event(decided(), age=timedelta(hours=2)))
    assert not await notify(event(expiring(timedelta(seconds=-5))))
    assert not await notify(event(active(status=common_pb2.GRANT_STATUS_REVOKED)))
    assert not await notify(event(events_pb2.AgentHeartbeat(agent_id="demo-agent")))
    assert slack.calls == []


async def test_the_feed_skips_what_it_cannot_decode_or_handle() -> None:
    handled: list[DecodedEvent] = []

    async def handle(decoded: DecodedEvent) -> None:
        handled.append(decoded)
        raise RuntimeError("a bug in a notice")

    feed = RequesterFeed(kafka=KafkaSettings(topic_prefix="t-"), handle=handle)
    assert feed.group_id == "t-lapse-chatops-notifier"
    assert feed.topics == ("t-lapse.decisions.v1", "t-lapse.grants.v1")
    await feed.on_record(b"not protobuf at all", topic="t-lapse.grants.v1")
    assert handled == []
    raw = build_envelope(active(), producer="test", occurred_at=NOW).SerializeToString()
    await feed.on_record(raw, topic="t-lapse.grants.v1")  # the handler's failure is logged
    assert [e.source_topic for e in handled] == ["t-lapse.grants.v1"]


@pytest.mark.parametrize(
    ("notify", "kafka_set", "bot_token", "on"),
    [
        (None, False, "xoxb-1", False),  # no Kafka configured: chatops runs as before
        (None, True, "xoxb-1", True),
        (False, True, "xoxb-1", False),
        (True, False, "xoxb-1", True),
        (None, True, "", False),  # nowhere to send to
    ],
)
async def test_notifications_follow_the_kafka_settings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    notify: bool | None,
    kafka_set: bool,
    bot_token: str,
    on: bool,
) -> None:
    monkeypatch.delenv("LAPSE_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    directory = tmp_path / "directory.yaml"
    directory.write_text("slack: {U01: {subject: alice}}")
    settings = ChatopsSettings(
        slack_signing_secret=SecretStr("s"),
        slack_bot_token=SecretStr(bot_token),
        notify_requesters=notify,
    )
    kafka = KafkaSettings(bootstrap_servers="kafka:9092") if kafka_set else KafkaSettings()
    async with aiohttp.ClientSession() as session:
        feed = requester_feed(
            settings, kafka=kafka, directory=DirectoryFile(directory), session=session
        )
    assert (feed is not None) == on
