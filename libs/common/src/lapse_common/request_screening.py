"""Every gRPC request is screened before any handler work, and no handler's failure leaves
as Python exception text.

The bounds are the ones every Lapse message has (lapse_common.field_bounds): the shared
ones and those a field declares next to its definition in proto/. A request out of bounds
is INVALID_ARGUMENT naming the field and the limit.

A `Refused` that reaches here (a check made outside a unit of work, such as a page token's
cursor read by a list) ends the call with its kind's status, as the unit of work would. An
unexpected exception becomes INTERNAL with an error id that is also in the log, so an
operator can find the traceback while the caller learns nothing about the code.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from lapse_common.field_bounds import OutOfBounds, screen
from lapse_common.refusals import Refused
from lapse_common.unit_of_work import abort_refused

logger = logging.getLogger(__name__)


def _internal_error(method: str) -> tuple[grpc.StatusCode, str]:
    error_id = uuid.uuid4().hex[:12]
    logger.exception("unexpected error %s in %s", error_id, method)
    return grpc.StatusCode.INTERNAL, f"internal error {error_id} (the service log has the details)"


class RequestScreeningInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Screens each request (INVALID_ARGUMENT), maps a `Refused` to its status and turns
    unexpected exceptions into INTERNAL with an error id. Unary and server-streaming
    methods, the shapes Lapse serves."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def unary_call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await _refuse_out_of_bounds(request, context)
                try:
                    return await unary(request, context)
                except grpc.aio.AbortError:
                    raise
                except Refused as refusal:
                    await abort_refused(context, refusal)
                except Exception:
                    await context.abort(*_internal_error(method))

            return grpc.unary_unary_rpc_method_handler(
                unary_call,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            streaming = handler.unary_stream

            async def streaming_call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await _refuse_out_of_bounds(request, context)
                try:
                    async for item in streaming(request, context):
                        yield item
                except grpc.aio.AbortError:
                    raise
                except Refused as refusal:
                    await abort_refused(context, refusal)
                except Exception:
                    await context.abort(*_internal_error(method))

            return grpc.unary_stream_rpc_method_handler(
                streaming_call,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


async def _refuse_out_of_bounds(request: Message, context: grpc.aio.ServicerContext) -> None:
    try:
        screen(request)
    except OutOfBounds as problem:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(problem))
