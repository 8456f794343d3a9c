"""Reading what Slack and Teams post, and the messages shown to approvers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from lapse_chatops.slack_blocks import (
    DECISION_BLOCK_ID,
    approval_request_blocks,
    decided_blocks,
    decision_note,
)
from lapse_chatops.slack_payloads import PayloadError, read_button_click, read_slash_command
from lapse_chatops.teams_activity import command_text, read_activity
from lapse_chatops.teams_cards import approval_card
from lapse_common.pb.lapse.v1 import common_pb2, request_service_pb2


def view() -> request_service_pb2.AccessRequestView:
    return request_service_pb2.AccessRequestView(
        request_id="req-1",
        requester="alice",
        flow="flow-g-any",
        status=common_pb2.REQUEST_STATUS_PENDING_APPROVAL,
        justification="INC-1 <!channel> & more",
        duration_seconds=1800,
        items=[
            common_pb2.GrantSpec(
                integration_id="demo-pg", resource="g-any", permission="read", principal="alice"
            )
        ],
    )


def test_slash_command_text_is_unescaped() -> None:
    body = urlencode(
        {"user_id": "U1", "user_name": "al", "text": "request a/b read as x because 1 &lt; 2"}
    ).encode()
    command = read_slash_command(body)
    assert (command.user_id, command.text) == ("U1", "request a/b read as x because 1 < 2")
    assert read_slash_command(b"ssl_check=1&token=x").ssl_check
    with pytest.raises(PayloadError, match="without user_id"):
        read_slash_command(b"text=help")


def click_body(**overrides: object) -> bytes:
    payload: dict[str, object] = {
        "type": "block_actions",
        "user": {"id": "U2", "username": "approver"},
        "container": {"type": "message", "message_ts": "111.222", "channel_id": "C1"},
        "channel": {"id": "C1"},
        "message": {"ts": "111.222", "blocks": approval_request_blocks(view(), approval_mode=None)},
        "response_url": "https://hooks.example/actions/1",
        "actions": [{"action_id": "lapse_reject", "value": "req-1", "type": "button"}],
    }
    payload.update(overrides)
    return urlencode({"payload": json.dumps(payload)}).encode()


def test_button_click_is_read() -> None:
    click = read_button_click(click_body())
    assert click is not None
    assert (click.user_id, click.approve, click.request_id) == ("U2", False, "req-1")
    assert (click.channel_id, click.message_ts) == ("C1", "111.222")
    assert click.response_url == "https://hooks.example/actions/1"
    assert len(click.message_blocks) == 2


def test_other_interactions_are_ignored_and_garbage_refused() -> None:
    assert read_button_click(click_body(type="view_submission")) is None
    assert read_button_click(click_body(actions=[{"action_id": "other"}])) is None
    with pytest.raises(PayloadError, match="not JSON"):
        read_button_click(b"payload=%7Bnope")
    with pytest.raises(PayloadError, match="without a payload"):
        read_button_click(b"text=x")


def test_user_text_cannot_ping_the_channel() -> None:
    text = approval_request_blocks(view(), approval_mode="any_of")[0]["text"]["text"]
    assert "&lt;!channel&gt; &amp; more" in text and "<!channel>" not in text
    assert "`demo-pg/g-any read as alice` for 30m" in text


def test_decided_message_drops_the_buttons_once_settled() -> None:
    blocks = approval_request_blocks(view(), approval_mode=None)
    note = decision_note(user_id="U2", subject="approver-a", approve=True, status="APPROVED")
    settled = decided_blocks(blocks, note=note, still_open=False)
    assert [b["type"] for b in settled] == ["section", "context"]
    assert "<@U2> (approver-a) approved: request is now *APPROVED*" in json.dumps(settled)
    open_ = decided_blocks(blocks, note="more needed", still_open=True)
    assert [b["type"] for b in open_] == ["section", "context", "actions"]
    assert open_[2]["block_id"] == DECISION_BLOCK_ID


def test_teams_text_loses_the_mention_and_markup() -> None:
    assert (
        command_text("<at>Lapse</at>&nbsp;request demo-pg/appdb read as bob because a &amp; b\n")
        == "request demo-pg/appdb read as bob because a & b"
    )
    message = read_activity(
        json.dumps(
            {
                "type": "message",
                "id": "1490000000000",
                "text": "<p><at>Lapse</at> help</p>",
                "timestamp": "2017-03-28T19:31:48.2350000Z",
                "from": {"id": "29:x", "name": "Bob", "aadObjectId": "aad-1"},
            }
        ).encode()
    )
    assert (message.activity_id, message.aad_object_id, message.user_id, message.text) == (
        "1490000000000",
        "aad-1",
        "29:x",
        "help",
    )
    assert message.sent_at == datetime(2017, 3, 28, 19, 31, 48, 235000, tzinfo=UTC)


def test_teams_card_links_to_the_request() -> None:
    card = json.dumps(
        approval_card(view(), console_url="https://lapse.example/", approval_mode=None)
    )
    assert "https://lapse.example/requests/req-1" in card
    assert "application/vnd.microsoft.card.adaptive" in card
