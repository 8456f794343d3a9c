"""Audit events as OCSF 1.x events, for SIEMs that speak OCSF.

Mapping (https://schema.ocsf.io, 1.3.0):
- a grant that became ACTIVE in the target: class 3005 User Access Management (category 3,
  Identity & Access Management), activity 1 Assign Privileges;
- a grant REVOKED in the target: the same class, activity 2 Revoke Privileges;
  with `privileges` [the permission], `user` the principal that got or lost it,
  `resource` the integration's resource and `actor` who caused it;
- every other event (requests, decisions, commands, agent results, quarantine, ...):
  class 0 Base Event, activity 99 Other.
Every event keeps all of Lapse's fields (sequence, event id, type, topic, hashes, the
payload) in `unmapped.lapse`, so nothing is lost and the chain can be re-checked.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from lapse_common.pb.lapse.v1 import audit_service_pb2

OCSF_VERSION = "1.3.0"
USER_ACCESS_MANAGEMENT = 3005
IAM_CATEGORY = 3
ASSIGN_PRIVILEGES = 1
REVOKE_PRIVILEGES = 2
BASE_EVENT = 0
OTHER_ACTIVITY = 99
INFORMATIONAL = 1
SUCCESS = 1
GRANT_STATUS_CHANGED = "lapse.v1.GrantStatusChanged"
_PRIVILEGE_CHANGES = {
    "GRANT_STATUS_ACTIVE": (ASSIGN_PRIVILEGES, "Assign Privileges"),
    "GRANT_STATUS_REVOKED": (REVOKE_PRIVILEGES, "Revoke Privileges"),
}


def lapse_fields(event: audit_service_pb2.AuditEvent) -> dict[str, Any]:
    """The audit event as one JSON object (the jsonl export's line)."""
    return {
        "sequence": event.sequence,
        "event_id": event.event_id,
        "type": event.type,
        "topic": event.topic,
        "producer": event.producer,
        "occurred_at": event.occurred_at.ToJsonString(),
        "recorded_at": event.recorded_at.ToJsonString(),
        "request_id": event.request_id,
        "grant_id": event.grant_id,
        "payload": _payload(event),
        "hash": event.hash,
        "prev_hash": event.prev_hash,
    }


def to_ocsf(event: audit_service_pb2.AuditEvent) -> dict[str, Any]:
    payload = _payload(event)
    common: dict[str, Any] = {
        "time": _millis(event.occurred_at),
        "severity_id": INFORMATIONAL,
        "severity": "Informational",
        "status_id": SUCCESS,
        "status": "Success",
        "message": f"{event.type.removeprefix('lapse.v1.')} (sequence {event.sequence})",
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": "Lapse", "vendor_name": "Lapse", "feature": {"name": "audit"}},
            "uid": event.event_id,
            "sequence": event.sequence,
            "log_name": event.topic,
            "logged_time": _millis(event.recorded_at),
            **({"correlation_uid": event.request_id} if event.request_id else {}),
        },
        "unmapped": {"lapse": lapse_fields(event)},
    }
    change = _PRIVILEGE_CHANGES.get(str(payload.get("status", "")))
    if event.type == GRANT_STATUS_CHANGED and change is not None:
        activity_id, activity_name = change
        spec = payload.get("spec") or {}
        actor = payload.get("actor") or payload.get("requester") or ""
        return {
            **common,
            "class_uid": USER_ACCESS_MANAGEMENT,
            "class_name": "User Access Management",
            "category_uid": IAM_CATEGORY,
            "category_name": "Identity & Access Management",
            "activity_id": activity_id,
            "activity_name": activity_name,
            "type_uid": USER_ACCESS_MANAGEMENT * 100 + activity_id,
            "type_name": f"User Access Management: {activity_name}",
            "privileges": [spec.get("permission", "")],
            "user": {"name": spec.get("principal", "")},
            "resource": {
                "uid": f"{spec.get('integration_id', '')}/{spec.get('resource', '')}",
                "name": spec.get("resource", ""),
                "type": "lapse integration resource",
                "group": {"name": spec.get("integration_id", "")},
            },
            "actor": {"user": {"name": actor}},
        }
    return {
        **common,
        "class_uid": BASE_EVENT,
        "class_name": "Base Event",
        "category_uid": 0,
        "category_name": "Uncategorized",
        "activity_id": OTHER_ACTIVITY,
        "activity_name": event.type.removeprefix("lapse.v1."),
        "type_uid": BASE_EVENT * 100 + OTHER_ACTIVITY,
        "type_name": "Base Event: Other",
    }


def _payload(event: audit_service_pb2.AuditEvent) -> dict[str, Any]:
    try:
        document = json.loads(event.payload_json)
    except ValueError:
        return {"unparsed_payload_json": event.payload_json}
    return document if isinstance(document, dict) else {"payload": document}


def _millis(stamp: Timestamp) -> int:
    return stamp.seconds * 1000 + stamp.nanos // 1_000_000
