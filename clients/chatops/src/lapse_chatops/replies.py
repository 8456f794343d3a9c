"""The words Lapse says back in chat, the same in Slack and Teams."""

from __future__ import annotations

from lapse_common.pb.lapse.v1 import common_pb2, request_service_pb2

from lapse_chatops.grammar import USAGE


def duration_text(seconds: int) -> str:
    if seconds <= 0:
        return "the flow's default time"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts)


def request_status(value: int) -> str:
    return common_pb2.RequestStatus.Name(value).removeprefix("REQUEST_STATUS_")  # type: ignore[arg-type]


def access_text(spec: common_pb2.GrantSpec) -> str:
    return f"{spec.integration_id}/{spec.resource} {spec.permission} as {spec.principal}"


def items_text(view: request_service_pb2.AccessRequestView) -> str:
    return ", ".join(access_text(item) for item in view.items)


def not_linked(platform: str, user: str) -> str:
    return (
        "your chat account is not linked to a Lapse identity; ask an admin to add "
        f"{user or '(no id)'} to the directory ({platform.lower()} section). Nothing was done."
    )


def usage() -> str:
    return USAGE


def bad_command(problem: str) -> str:
    return f"{problem}\n{USAGE}"


def refused(code: str, message: str) -> str:
    return f"Lapse refused: {code}: {message}. Nothing was filed."


def filed(view: request_service_pb2.AccessRequestView, *, approval_mode: str | None) -> str:
    head = (
        f"{view.request_id} {request_status(view.status)}: {items_text(view)} "
        f"for {duration_text(view.duration_seconds)} under flow {view.flow}"
    )
    if approval_mode == "auto":
        return f"{head}. The flow approves it automatically; access follows in a moment."
    mode = f" ({approval_mode})" if approval_mode else ""
    return f"{head}. Waiting for the flow's approvers{mode}; they have been asked."
