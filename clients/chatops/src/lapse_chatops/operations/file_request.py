"""Someone typed a command in chat: file the access request as them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from lapse_common.pb.lapse.v1 import request_service_pb2

from lapse_chatops import replies
from lapse_chatops.directory import Person
from lapse_chatops.grammar import CommandError, HelpCommand, RequestCommand, parse_command
from lapse_chatops.lapse_api import LapseRefused

logger = logging.getLogger(__name__)


class RequestSubmitter(Protocol):
    async def submit(
        self, person: Person, command: RequestCommand
    ) -> request_service_pb2.AccessRequestView: ...

    async def approval_mode(self, person: Person, flow: str) -> str | None: ...


@dataclass(frozen=True)
class Filing:
    reply: str
    # Set when a request was filed that human approvers must decide.
    needs_approvers: request_service_pb2.AccessRequestView | None = None
    approval_mode: str | None = None


async def file_request(
    *, text: str, person: Person | None, platform: str, chat_user: str, lapse: RequestSubmitter
) -> Filing:
    if person is None:
        logger.info("%s user %s is not in the directory: nothing filed", platform, chat_user)
        return Filing(reply=replies.not_linked(platform, chat_user))
    try:
        command = parse_command(text)
    except CommandError as problem:
        return Filing(reply=replies.bad_command(str(problem)))
    if isinstance(command, HelpCommand):
        return Filing(reply=replies.usage())
    try:
        view = await lapse.submit(person, command)
    except LapseRefused as refusal:
        logger.info("%s user %s (%s) refused: %s", platform, chat_user, person.subject, refusal)
        return Filing(reply=replies.refused(refusal.code, refusal.message))
    logger.info(
        "%s user %s (%s) filed %s: %s",
        platform,
        chat_user,
        person.subject,
        view.request_id,
        command.describe(),
    )
    try:
        mode = await lapse.approval_mode(person, view.flow)
    except LapseRefused as refusal:
        # Not knowing the policy must not leave approvers unaware: ask them anyway.
        logger.warning("approval mode of flow %s unknown: %s", view.flow, refusal)
        mode = None
    return Filing(
        reply=replies.filed(view, approval_mode=mode),
        needs_approvers=None if mode == "auto" else view,
        approval_mode=mode,
    )
