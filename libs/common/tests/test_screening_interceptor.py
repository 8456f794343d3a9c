"""What leaves a servicer through the screening interceptor: a `Refused` raised outside a
unit of work gets its kind's status and message, an unexpected exception only INTERNAL with
an error id, for unary and server-streaming methods alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc
import pytest
from lapse_common.pb.lapse.v1 import request_service_pb2
from lapse_common.refusals import Refusal, Refused
from lapse_common.request_screening import RequestScreeningInterceptor


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class Context:
    """grpc's ServicerContext.abort raises; this one raises something a test can read."""

    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise Aborted(code, details)


class Details:
    method = "/lapse.v1.RequestService/ListActivity"


async def screened(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    async def continuation(details: Any) -> grpc.RpcMethodHandler:
        return handler

    wrapped: grpc.RpcMethodHandler = await RequestScreeningInterceptor().intercept_service(
        continuation, Details()
    )
    return wrapped


FORGED_CURSOR = Refused(Refusal.INVALID, "page_token is not one this list gave out")


async def test_a_refusal_from_a_unary_method_keeps_its_status_and_message() -> None:
    async def list_activity(request: Any, context: Any) -> Any:
        raise FORGED_CURSOR

    handler = await screened(grpc.unary_unary_rpc_method_handler(list_activity))
    with pytest.raises(Aborted) as aborted:
        await handler.unary_unary(request_service_pb2.ListActivityRequest(), Context())
    assert aborted.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert aborted.value.details == "page_token is not one this list gave out"


async def test_a_refusal_from_a_streaming_method_keeps_its_status_and_message() -> None:
    async def follow(request: Any, context: Any) -> AsyncIterator[Any]:
        yield request_service_pb2.ListActivityResponse()
        raise Refused(Refusal.FORBIDDEN, "following this run needs the admin role")

    handler = await screened(grpc.unary_stream_rpc_method_handler(follow))
    served = []
    with pytest.raises(Aborted) as aborted:
        async for item in handler.unary_stream(
            request_service_pb2.ListActivityRequest(), Context()
        ):
            served.append(item)
    assert len(served) == 1
    assert aborted.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert aborted.value.details == "following this run needs the admin role"


async def test_an_unexpected_error_says_nothing_about_the_code() -> None:
    async def list_activity(request: Any, context: Any) -> Any:
        raise KeyError("secret column name")

    handler = await screened(grpc.unary_unary_rpc_method_handler(list_activity))
    with pytest.raises(Aborted) as aborted:
        await handler.unary_unary(request_service_pb2.ListActivityRequest(), Context())
    assert aborted.value.code == grpc.StatusCode.INTERNAL
    assert "secret" not in aborted.value.details
    assert aborted.value.details.startswith("internal error ")
