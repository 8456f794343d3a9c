"""The Kafka admin requests aiokafka's admin client lacks: ACLs and SCRAM credentials,
built on aiokafka's own protocol structures and sent over its authenticated connection."""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.admin import (
    CreateAclsRequest_v1,
    DeleteAclsRequest_v1,
    DescribeAclsRequest_v1,
)
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    CompactArray,
    CompactBytes,
    CompactString,
    Int8,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)


class ResourceType(enum.IntEnum):
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4


class PatternType(enum.IntEnum):
    ANY = 1
    LITERAL = 3
    PREFIXED = 4


class Operation(enum.IntEnum):
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8


ALLOW = 3
ANY_PERMISSION = 1
ANY_RESOURCE = 1
SCRAM_SHA_512 = 2
# RFC 7677 asks for at least 4096; Kafka refuses fewer.
SCRAM_ITERATIONS = 8192


class KafkaAdminRefused(RuntimeError):
    """The broker refused an admin request; the message says which and why."""


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW rule for one principal from any host."""

    principal: str  # "User:<name>"
    resource_type: ResourceType
    resource_name: str
    pattern: PatternType
    operation: Operation

    def describe(self) -> str:
        star = "*" if self.pattern is PatternType.PREFIXED else ""
        return (
            f"{self.principal} {self.operation.name} "
            f"{self.resource_type.name.lower()} {self.resource_name}{star}"
        )


class _CreateAcls(Request[CreateAclsRequest_v1]):  # type: ignore[misc]  # aiokafka ships no type information
    API_KEY = 30

    def __init__(self, acls: list[Acl]) -> None:
        self._acls = acls

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(
            [
                (a.resource_type, a.resource_name, a.pattern, a.principal, "*", a.operation, ALLOW)
                for a in self._acls
            ]
        )


class _DescribeAcls(Request[DescribeAclsRequest_v1]):  # type: ignore[misc]  # aiokafka ships no type information
    API_KEY = 29

    def __init__(self, principal: str | None) -> None:
        self._principal = principal

    def build(self, request_struct_class: type[DescribeAclsRequest_v1]) -> DescribeAclsRequest_v1:
        return request_struct_class(
            ANY_RESOURCE,
            None,
            PatternType.ANY,
            self._principal,
            None,
            Operation.ANY,
            ANY_PERMISSION,
        )


class _DeleteAcls(Request[DeleteAclsRequest_v1]):  # type: ignore[misc]  # aiokafka ships no type information
    API_KEY = 31

    def __init__(self, acls: list[Acl]) -> None:
        self._acls = acls

    def build(self, request_struct_class: type[DeleteAclsRequest_v1]) -> DeleteAclsRequest_v1:
        return request_struct_class(
            [
                (a.resource_type, a.resource_name, a.pattern, a.principal, "*", a.operation, ALLOW)
                for a in self._acls
            ]
        )


class _AlterScramResponse(Response):  # type: ignore[misc]  # aiokafka ships no type information
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "results",
            CompactArray(
                ("user", CompactString("utf-8")),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _AlterScramStruct(RequestStruct):  # type: ignore[misc]  # aiokafka ships no type information
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = _AlterScramResponse
    SCHEMA = Schema(
        (
            "deletions",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("mechanism", Int8),
                ("tags", TaggedFields),
            ),
        ),
        (
            "upsertions",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("mechanism", Int8),
                ("iterations", Int32),
                ("salt", CompactBytes),
                ("salted_password", CompactBytes),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _AlterScram(Request[_AlterScramStruct]):  # type: ignore[misc]  # aiokafka ships no type information
    API_KEY = 51

    def __init__(self, *, upsert: dict[str, str], delete: list[str]) -> None:
        self._upsert = upsert
        self._delete = delete

    def build(self, request_struct_class: type[_AlterScramStruct]) -> _AlterScramStruct:
        upsertions: list[tuple[object, ...]] = []
        for name, password in self._upsert.items():
            salt = secrets.token_bytes(32)
            # SCRAM's SaltedPassword (RFC 5802 Hi()): the broker stores only this and the
            # salt, never the password.
            salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, SCRAM_ITERATIONS)
            upsertions.append((name, SCRAM_SHA_512, SCRAM_ITERATIONS, salt, salted, {}))
        deletions: list[tuple[object, ...]] = [(name, SCRAM_SHA_512, {}) for name in self._delete]
        return request_struct_class(deletions, upsertions, {})


async def _send(admin: AIOKafkaAdminClient, request: Request[Any]) -> Any:
    return await admin._send_request(request)


async def set_scram_passwords(admin: AIOKafkaAdminClient, passwords: dict[str, str]) -> None:
    """Create or replace the SCRAM-SHA-512 credential of each user."""
    if passwords:
        response = await _send(admin, _AlterScram(upsert=passwords, delete=[]))
        _raise_for_results("setting the SCRAM credential of", response.results)


async def delete_scram_users(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    """Remove the users' SCRAM-SHA-512 credentials; a user without one is not an error."""
    if names:
        response = await _send(admin, _AlterScram(upsert={}, delete=names))
        missing = 91  # RESOURCE_NOT_FOUND: there was no credential to delete
        _raise_for_results(
            "deleting the SCRAM credential of",
            [r for r in response.results if r[1] != missing],
        )


def _raise_for_results(what: str, results: list[tuple[Any, ...]]) -> None:
    problems = [
        f"{user}: {for_code(code).__name__}{f' ({message})' if message else ''}"
        for user, code, message, *_ in results
        if code
    ]
    if problems:
        raise KafkaAdminRefused(f"the broker refused {what} " + "; ".join(problems))


async def create_acls(admin: AIOKafkaAdminClient, acls: list[Acl]) -> None:
    """Add the rules; adding a rule that exists already changes nothing."""
    if not acls:
        return
    response = await _send(admin, _CreateAcls(acls))
    problems = [
        f"{acl.describe()}: {for_code(code).__name__}{f' ({message})' if message else ''}"
        for acl, (code, message) in zip(acls, response.creation_responses, strict=True)
        if code
    ]
    if problems:
        raise KafkaAdminRefused("the broker refused ACLs: " + "; ".join(problems))


async def describe_acls(admin: AIOKafkaAdminClient, principal: str | None = None) -> list[Acl]:
    """Every ALLOW rule on the broker (of `principal` only, if given)."""
    response = await _send(admin, _DescribeAcls(principal))
    if response.error_code:
        raise KafkaAdminRefused(
            f"the broker refused to list ACLs: {for_code(response.error_code).__name__} "
            f"{response.error_message or ''}".strip()
        )
    found = []
    for resource_type, resource_name, pattern, rules in response.resources:
        for who, _host, operation, permission in rules:
            if permission == ALLOW and resource_type in iter(ResourceType):
                found.append(
                    Acl(
                        who,
                        ResourceType(resource_type),
                        resource_name,
                        PatternType(pattern),
                        Operation(operation),
                    )
                )
    return sorted(found)


async def delete_acls(admin: AIOKafkaAdminClient, acls: list[Acl]) -> None:
    """Remove exactly these rules."""
    if not acls:
        return
    response = await _send(admin, _DeleteAcls(acls))
    problems = [
        f"{acl.describe()}: {for_code(code).__name__}{f' ({message})' if message else ''}"
        for acl, (code, message, _matches) in zip(acls, response.filter_responses, strict=True)
        if code
    ]
    if problems:
        raise KafkaAdminRefused("the broker refused to delete ACLs: " + "; ".join(problems))
