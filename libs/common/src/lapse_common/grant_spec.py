"""Building a lapse.v1.GrantSpec from any row that stores one's five fields."""

from __future__ import annotations

from typing import Protocol

from lapse_common.pb.lapse.v1 import common_pb2


class StoresGrantSpec(Protocol):
    @property
    def integration_id(self) -> str: ...
    @property
    def agent_id(self) -> str: ...
    @property
    def resource(self) -> str: ...
    @property
    def permission(self) -> str: ...
    @property
    def principal(self) -> str: ...


def grant_spec_of(row: StoresGrantSpec) -> common_pb2.GrantSpec:
    return common_pb2.GrantSpec(
        integration_id=row.integration_id,
        agent_id=row.agent_id,
        resource=row.resource,
        permission=row.permission,
        principal=row.principal,
    )
