"""The event kinds of an AccessEvent: their names, Kafka keys and required fields.

Kind names are the `kind` oneof's field names in access_events.proto, so the registry's
`events:` list, the wire format and this module can never disagree.
"""

from __future__ import annotations

from typing import TypeAlias

from google.protobuf.message import Message

from lapse_common.pb.lapse.v1 import access_events_pb2, common_pb2

UserOffboarded = access_events_pb2.UserOffboarded
IncidentDeclared = access_events_pb2.IncidentDeclared
IncidentResolved = access_events_pb2.IncidentResolved
AccessRequested = access_events_pb2.AccessRequested

AccessEventPayload: TypeAlias = (
    UserOffboarded | IncidentDeclared | IncidentResolved | AccessRequested
)

_KIND_ONEOF = access_events_pb2.AccessEvent.DESCRIPTOR.oneofs_by_name["kind"]
# Protobuf full name of each payload type -> its kind name (the oneof field).
_KIND_BY_TYPE: dict[str, str] = {
    field.message_type.full_name: field.name
    for field in _KIND_ONEOF.fields
    if field.message_type is not None
}
EVENT_KINDS: frozenset[str] = frozenset(_KIND_BY_TYPE.values())


def kind_of(payload: Message) -> str:
    """The kind name for a payload message, e.g. "user_offboarded" for UserOffboarded."""
    kind = _KIND_BY_TYPE.get(payload.DESCRIPTOR.full_name)
    if kind is None:
        allowed = ", ".join(sorted(_KIND_BY_TYPE))
        raise TypeError(
            f"{payload.DESCRIPTOR.full_name} is not an access event; use one of {allowed}"
        )
    return kind


def wrap(event: access_events_pb2.AccessEvent, payload: AccessEventPayload) -> None:
    """Set `payload` as the event's kind."""
    getattr(event, kind_of(payload)).CopyFrom(payload)


def payload_of(event: access_events_pb2.AccessEvent) -> AccessEventPayload | None:
    kind = event.WhichOneof("kind")
    if kind is None:
        return None
    payload: AccessEventPayload = getattr(event, kind)
    return payload


def partition_key(payload: AccessEventPayload) -> str:
    """The Kafka key: events about one subject, incident or machine stay in order."""
    if isinstance(payload, UserOffboarded):
        return payload.subject
    if isinstance(payload, IncidentDeclared | IncidentResolved):
        return payload.incident_id
    return payload.machine_identity


def _scope_is_empty(scope: common_pb2.AccessScope) -> bool:
    # An unset scope must never widen to "all access": `everything` has to be explicit.
    return not any(
        (
            scope.everything,
            scope.integration_id,
            scope.resource,
            scope.permission,
            scope.user,
            scope.group,
            scope.flow,
        )
    )


def payload_problem(payload: AccessEventPayload) -> str | None:
    """Why a payload cannot be acted on (a required field is empty), or None."""
    kind = kind_of(payload)
    if isinstance(payload, UserOffboarded):
        missing = [] if payload.subject else ["subject"]
    elif isinstance(payload, IncidentDeclared):
        missing = [] if payload.incident_id else ["incident_id"]
        if _scope_is_empty(payload.scope):
            missing.append("scope (set `everything` explicitly to mean all access)")
    elif isinstance(payload, IncidentResolved):
        missing = [] if payload.incident_id else ["incident_id"]
    else:
        required = ("machine_identity", "integration_id", "resource", "permission")
        missing = [name for name in required if not getattr(payload, name)]
        if payload.duration_seconds < 0:
            return f"{kind}.duration_seconds is negative ({payload.duration_seconds})"
    if missing:
        return f"{kind} has no " + ", no ".join(missing)
    return None
