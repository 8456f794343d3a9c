"""Payloads rendered as JSON for people reading the audit log."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError, Message
from lapse_common.pb.lapse.v1 import commands_pb2, events_pb2


def unverified_agent_command(
    signed: commands_pb2.SignedCommand,
) -> commands_pb2.AgentCommand | None:
    """The command inside a SignedCommand, without checking its signature: audit records
    what was on the wire, forged or not; agents are the ones that verify."""
    command = commands_pb2.AgentCommand()
    try:
        command.ParseFromString(signed.command)
    except DecodeError:
        return None
    return command


def render_payload_json(payload: Message, *, verification: str = "") -> str:
    """JSON of the payload with proto field names and every field shown (an absent
    `stuck: false` is as telling as a present one). A SignedCommand or a SignedAgentReport
    also shows what it carries, which is otherwise only base64 bytes; `verification` (an
    agent report's signature check) is kept as `agent_signature`."""
    try:
        if isinstance(payload, commands_pb2.SignedCommand):
            document = _signed_command_document(payload)
        elif isinstance(payload, events_pb2.SignedAgentReport):
            document = _signed_report_document(payload)
        else:
            document = _as_dict(payload)
        if verification:
            document["agent_signature"] = verification
        return json.dumps(document, indent=2)
    except (json_format.Error, ValueError) as error:
        # e.g. a Timestamp field out of range: JSON cannot show it, but the event must
        # still be recorded (the raw bytes are kept), so fall back to protobuf text.
        return json.dumps(
            {
                "json_rendering_error": str(error),
                "text": text_format.MessageToString(payload),
            },
            indent=2,
        )


def _signed_command_document(signed: commands_pb2.SignedCommand) -> dict[str, Any]:
    document = _as_dict(signed)
    command = unverified_agent_command(signed)
    if command is None:
        document["decoded_command_error"] = "the command bytes are not a lapse.v1.AgentCommand"
    else:
        document["decoded_command"] = _as_dict(command)
    document["signature_verified_by_audit"] = False
    return document


def _signed_report_document(signed: events_pb2.SignedAgentReport) -> dict[str, Any]:
    document = _as_dict(signed)
    report: Message
    if signed.report_type == events_pb2.AgentResult.DESCRIPTOR.full_name:
        report = events_pb2.AgentResult()
    elif signed.report_type == events_pb2.AgentHeartbeat.DESCRIPTOR.full_name:
        report = events_pb2.AgentHeartbeat()
    else:
        document["decoded_report_error"] = f"unknown report type {signed.report_type!r}"
        return document
    try:
        report.ParseFromString(signed.report)
        document["decoded_report"] = _as_dict(report)
    except DecodeError as error:
        document["decoded_report_error"] = str(error)
    return document


def _as_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
