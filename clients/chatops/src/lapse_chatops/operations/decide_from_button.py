"""An approver clicked Approve or Reject in Slack: record the vote as them and show it."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from lapse_chatops import replies
from lapse_chatops.delivery import ChatDeliveryFailed
from lapse_chatops.directory import Person
from lapse_chatops.lapse_api import LapseRefused
from lapse_chatops.slack_blocks import decided_blocks, decision_note
from lapse_chatops.slack_payloads import ButtonClick

logger = logging.getLogger(__name__)


class Decider(Protocol):
    async def decide(
        self, person: Person, *, request_id: str, approve: bool, reason: str
    ) -> str: ...


class SlackMessages(Protocol):
    async def update_message(
        self, *, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]
    ) -> None: ...

    async def respond_privately(self, *, response_url: str, text: str) -> None: ...


async def _tell_clicker(slack: SlackMessages, click: ButtonClick, text: str) -> None:
    if not click.response_url:
        logger.warning("no response_url to tell %s: %s", click.user_id, text)
        return
    try:
        await slack.respond_privately(response_url=click.response_url, text=text)
    except ChatDeliveryFailed as error:
        logger.error("could not tell %s %r: %s", click.user_id, text, error)


async def decide_from_button(
    *, click: ButtonClick, person: Person | None, lapse: Decider, slack: SlackMessages
) -> str | None:
    """The request's status after the vote, or None if no vote was recorded."""
    if person is None:
        logger.info("Slack user %s is not in the directory: no vote", click.user_id)
        await _tell_clicker(slack, click, replies.not_linked("Slack", click.user_id))
        return None
    verb, done = ("approve", "approved") if click.approve else ("reject", "rejected")
    # The approval service requires a reason to reject; a button click has none to give.
    reason = f"{done} in Slack by {person.subject}"
    try:
        status = await lapse.decide(
            person, request_id=click.request_id, approve=click.approve, reason=reason
        )
    except LapseRefused as refusal:
        logger.info(
            "%s (%s) may not %s %s: %s",
            click.user_id,
            person.subject,
            verb,
            click.request_id,
            refusal,
        )
        await _tell_clicker(
            slack,
            click,
            f"Could not {verb} {click.request_id}: {refusal.code}: {refusal.message}",
        )
        return None
    logger.info(
        "%s (%s) %s %s: now %s", click.user_id, person.subject, done, click.request_id, status
    )
    note = decision_note(
        user_id=click.user_id, subject=person.subject, approve=click.approve, status=status
    )
    try:
        await slack.update_message(
            channel=click.channel_id,
            ts=click.message_ts,
            text=f"{click.request_id}: {done} by {person.subject}, now {status}",
            blocks=decided_blocks(
                click.message_blocks, note=note, still_open=status == "PENDING_APPROVAL"
            ),
        )
    except ChatDeliveryFailed as error:
        logger.error(
            "vote on %s recorded but the message was not updated: %s", click.request_id, error
        )
        await _tell_clicker(
            slack, click, f"Your vote was recorded: {click.request_id} is now {status}."
        )
    return status
