"""The rules every gRPC request shares, checked before any handler runs."""

from __future__ import annotations

import pytest
from lapse_common.field_bounds import MAX_SECONDS, OutOfBounds, screen
from lapse_common.pb.lapse.v1 import (
    access_events_pb2,
    approval_service_pb2,
    audit_service_pb2,
    commands_pb2,
    common_pb2,
    events_pb2,
    field_limits_pb2,
    request_service_pb2,
    revoker_service_pb2,
)


def test_a_two_mebibyte_reason_is_refused_naming_the_field_without_echoing_it() -> None:
    with pytest.raises(OutOfBounds) as refused:
        screen(request_service_pb2.CancelRequestRequest(request_id="r", reason="x" * 2**21))
    message = str(refused.value)
    assert message.startswith("reason is 2097152 characters long; the limit is 4096")
    assert len(message) < 200


@pytest.mark.parametrize(
    "request_message",
    [
        request_service_pb2.SubmitRequestRequest(duration_seconds=2**63 - 1),
        approval_service_pb2.ExtendGrantRequest(extend_by_seconds=10**14),
        approval_service_pb2.CheckRequestRequest(duration_seconds=10**14),
        revoker_service_pb2.ListStuckRevocationsRequest(min_age_seconds=2**62),
        request_service_pb2.ScopedRevocationRequest(wait_seconds=3601),
        request_service_pb2.SubmitRequestRequest(duration_seconds=-1),
    ],
)
def test_seconds_outside_what_the_clock_can_take_are_refused(request_message: object) -> None:
    with pytest.raises(OutOfBounds, match="_seconds is -?[0-9]+; it must be between 0 and"):
        screen(request_message)  # type: ignore[arg-type]


def test_nul_in_nested_text_is_refused_with_its_path() -> None:
    request = approval_service_pb2.CheckRequestRequest(
        item=common_pb2.GrantSpec(integration_id="demo-pg", resource="app\x00db")
    )
    with pytest.raises(OutOfBounds, match=r"item\.resource contains a NUL character"):
        screen(request)


def test_too_many_items_are_refused() -> None:
    request = approval_service_pb2.ApplyFlowsRequest(
        files=[approval_service_pb2.FlowFileContent(name=f"f{i}") for i in range(1001)]
    )
    with pytest.raises(OutOfBounds, match="files has 1001 items; the limit is 1000"):
        screen(request)


def test_ordinary_requests_and_longer_documents_pass() -> None:
    screen(
        request_service_pb2.SubmitRequestRequest(
            duration_seconds=MAX_SECONDS, justification="ticket 42"
        )
    )
    screen(
        approval_service_pb2.ApplyFlowsRequest(
            files=[approval_service_pb2.FlowFileContent(name="flows.yaml", content="a" * 100_000)]
        )
    )


def test_bounds_declared_in_proto_are_the_ones_enforced() -> None:
    content = approval_service_pb2.FlowFileContent.DESCRIPTOR.fields_by_name["content"]
    assert content.GetOptions().Extensions[field_limits_pb2.limits].max_len == 256 * 1024
    with pytest.raises(
        OutOfBounds, match=r"files\[0\].content is 262145 characters long; the limit is 262144"
    ):
        screen(
            approval_service_pb2.ApplyFlowsRequest(
                files=[approval_service_pb2.FlowFileContent(content="a" * (256 * 1024 + 1))]
            )
        )
    with pytest.raises(OutOfBounds, match="wait_seconds is 3601; it must be between 0 and 3600"):
        screen(request_service_pb2.ScopedRevocationRequest(wait_seconds=3601))
    # page_size is not a *_seconds field: its bound comes from its annotation alone.
    with pytest.raises(OutOfBounds, match="page_size is 1001; it must be between 0 and 1000"):
        screen(request_service_pb2.ListActivityRequest(page_size=1001))
    with pytest.raises(OutOfBounds, match="page_size is -1"):
        screen(revoker_service_pb2.ListAgentsRequest(page_size=-1))
    screen(request_service_pb2.ListActivityRequest(page_size=1000, limit=2**31 - 1))


def test_every_annotated_field_has_a_bound_that_means_something() -> None:
    # An annotation on a field of the wrong kind would be silently ignored: refuse that here.
    modules = (
        approval_service_pb2,
        request_service_pb2,
        revoker_service_pb2,
        audit_service_pb2,
        events_pb2,
        commands_pb2,
        access_events_pb2,
    )
    annotated = 0
    for module in modules:
        for message in module.DESCRIPTOR.message_types_by_name.values():
            for field in message.fields:
                limits = field.GetOptions().Extensions[field_limits_pb2.limits]
                if limits.max_len:
                    assert field.type in (field.TYPE_STRING, field.TYPE_BYTES), field.full_name
                if limits.max_items:
                    assert field.is_repeated, field.full_name
                if limits.max:
                    assert field.cpp_type in (field.CPPTYPE_INT32, field.CPPTYPE_INT64), (
                        field.full_name
                    )
                annotated += bool(limits.max_len or limits.max_items or limits.max)
    assert annotated >= 9
