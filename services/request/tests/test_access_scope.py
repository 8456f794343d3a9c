"""Who may use which scope, and which requests a lockdown scope covers: decided here, on the
server, whatever the client sends."""

from __future__ import annotations

import pytest
from lapse_common.auth import Identity
from lapse_common.pb.lapse.v1 import common_pb2
from lapse_common.refusals import Refusal, Refused
from lapse_request.access_scope import (
    Reach,
    authorize_scope,
    check_scope_shape,
    request_in_scope,
)

ADMIN = Identity(subject="ops", roles=("admin",))
ALICE = Identity(subject="alice", groups=("engineering",))
Scope = common_pb2.AccessScope


@pytest.mark.parametrize(
    ("identity", "scope", "approved_by_me", "admin_only", "reach"),
    [
        (ADMIN, Scope(everything=True), False, "the panic button", Reach()),
        (ADMIN, Scope(user="bob"), False, "", Reach()),
        (ALICE, Scope(user="alice"), False, "", Reach(owner="alice")),
        (ALICE, Scope(resource="appdb"), False, "", Reach(owner="alice")),
        (ALICE, Scope(user="bob"), True, "", Reach(approved_by="alice")),
    ],
)
def test_allowed_reach(
    identity: Identity, scope: Scope, approved_by_me: bool, admin_only: str, reach: Reach
) -> None:
    assert (
        authorize_scope(identity, scope, approved_by_me=approved_by_me, admin_only=admin_only)
        == reach
    )


@pytest.mark.parametrize(
    ("scope", "approved_by_me", "admin_only", "message"),
    [
        (Scope(user="bob"), False, "", "alice may revoke only their own access"),
        (Scope(everything=True), False, "", "anything wider needs the admin role"),
        (Scope(user="alice"), False, "the panic button", "the panic button needs the admin role"),
        (Scope(user="alice"), True, "a lockdown", "a lockdown needs the admin role"),
    ],
)
def test_refused_reach(scope: Scope, approved_by_me: bool, admin_only: str, message: str) -> None:
    with pytest.raises(Refused) as refused:
        authorize_scope(ALICE, scope, approved_by_me=approved_by_me, admin_only=admin_only)
    assert refused.value.kind is Refusal.FORBIDDEN and message in refused.value.message


def test_an_empty_scope_is_never_everything() -> None:
    with pytest.raises(Refused, match="names nothing") as refused:
        check_scope_shape(Scope(), reach=Reach())
    assert refused.value.kind is Refusal.INVALID
    with pytest.raises(Refused, match="choose one") as refused:
        check_scope_shape(Scope(everything=True, user="bob"))
    assert refused.value.kind is Refusal.INVALID
    # Confined by the reach: all of one's own access, or all one approved.
    check_scope_shape(Scope(), reach=Reach(owner="alice"))
    check_scope_shape(Scope(), reach=Reach(approved_by="alice"))


ITEM = common_pb2.GrantSpec(integration_id="demo-pg", resource="appdb", permission="read")


@pytest.mark.parametrize(
    ("scope", "covered"),
    [
        (Scope(everything=True), True),
        (Scope(integration_id="demo-pg"), True),
        (Scope(integration_id="other-pg"), False),
        (Scope(integration_id="demo-pg", permission="write"), False),
        (Scope(group="engineering"), True),
        (Scope(group="sales"), False),
        (Scope(user="alice", flow="self-service"), True),
        (Scope(flow="prod-write"), False),
    ],
)
def test_lockdown_scope_matching(scope: Scope, covered: bool) -> None:
    assert (
        request_in_scope(
            scope, requester="alice", groups=("engineering",), flow="self-service", item=ITEM
        )
        is covered
    )
