"""Decide whether a SignedCommand really comes from the platform and is meant for us."""

from __future__ import annotations

from google.protobuf.message import DecodeError
from lapse_common.command_signing import CommandRejected, CommandVerifier
from lapse_common.pb.lapse.v1 import commands_pb2, common_pb2


class CommandRefused(Exception):
    """The command must not run. `claimed` is what the (untrusted) bytes say, parsed as
    far as possible, so the refusal can still name the grant and command it concerns."""

    def __init__(self, reason: str, *, claimed: commands_pb2.AgentCommand) -> None:
        super().__init__(reason)
        self.reason = reason
        self.claimed = claimed


def claimed_command(signed: commands_pb2.SignedCommand) -> commands_pb2.AgentCommand:
    """Best-effort parse of unverified bytes; only ever used to address a refusal."""
    claimed = commands_pb2.AgentCommand()
    try:
        claimed.ParseFromString(signed.command)
    except DecodeError:
        return commands_pb2.AgentCommand()
    return claimed


def authenticate_command(
    *, signed: commands_pb2.SignedCommand, verifier: CommandVerifier, agent_id: str
) -> commands_pb2.AgentCommand:
    """The verified command, or CommandRefused saying why it must not run.

    Rejects unsigned, forged (signature does not verify with the platform key), expired,
    and commands addressed to another agent or missing what they need to be executed.
    """
    try:
        command = verifier.verify(signed)
    except CommandRejected as rejected:
        raise CommandRefused(
            f"rejected: {rejected.reason}", claimed=claimed_command(signed)
        ) from None
    if command.spec.agent_id != agent_id:
        raise CommandRefused(
            f"rejected: command is for agent {command.spec.agent_id!r}, this is agent {agent_id!r}",
            claimed=command,
        )
    if not command.command_id:
        raise CommandRefused("rejected: command has no command_id", claimed=command)
    if command.kind not in (
        common_pb2.COMMAND_KIND_GRANT,
        common_pb2.COMMAND_KIND_REVOKE,
        common_pb2.COMMAND_KIND_DISCOVER,
    ):
        raise CommandRefused(f"rejected: unknown command kind {command.kind}", claimed=command)
    if command.kind != common_pb2.COMMAND_KIND_DISCOVER and not command.grant_id:
        raise CommandRefused("rejected: grant/revoke command has no grant_id", claimed=command)
    return command
