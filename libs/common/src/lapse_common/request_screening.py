"""Every gRPC request is screened before any handler work, and no handler's failure leaves
as Python exception text.

Screening applies rules every field of every request shares: text has no NUL (PostgreSQL
cannot store it, and no identifier or reason needs it) and a bounded length, lists a bounded
size, and a `*_seconds` field a range every clock and database calculation can take. A
field that needs another bound declares it next to its definition in proto/ with the
`(lapse.v1.limits)` option (proto/lapse/v1/field_limits.proto). Answers name the field and the
limit and never echo more than a short excerpt of the input.

An unexpected exception becomes INTERNAL with an error id that is also in the log, so an
operator can find the traceback while the caller learns nothing about the code.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from lapse_common.pb.lapse.v1 import field_limits_pb2

logger = logging.getLogger(__name__)

MAX_TEXT = 4096
MAX_ITEMS = 1000
# Ten years: longer than any grant, lockdown or age an operator asks about, and far inside
# what datetime arithmetic and PostgreSQL timestamps accept.
MAX_SECONDS = 10 * 366 * 24 * 3600
EXCERPT = 40

_INTEGER_TYPES = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
}


class OutOfBounds(ValueError):
    pass


def excerpt(text: str) -> str:
    return repr(text[:EXCERPT]) + ("…" if len(text) > EXCERPT else "")


def screen(message: Message, path: str = "") -> None:
    """Raise OutOfBounds naming the first field of `message` that breaks its limit."""
    for field, value in message.ListFields():
        name = f"{path}{field.name}"
        values: list[Any]
        if field.is_repeated:
            items = list(value.values()) if _is_map(field) else list(value)
            most = _declared(field).max_items or MAX_ITEMS
            if len(items) > most:
                raise OutOfBounds(f"{name} has {len(items)} items; the limit is {most}")
            values = items
        else:
            values = [value]
        for index, item in enumerate(values):
            where = f"{name}[{index}]" if field.is_repeated else name
            _screen_value(field, item, where)
        if _is_map(field):
            for key in value:
                if isinstance(key, str):
                    _screen_text(field, key, f"{name} key")


def _screen_value(field: FieldDescriptor, value: Any, where: str) -> None:
    if isinstance(value, Message):
        screen(value, f"{where}.")
    elif isinstance(value, str):
        _screen_text(field, value, where)
    elif isinstance(value, bytes):
        limit = _declared(field).max_len or MAX_TEXT
        if len(value) > limit:
            raise OutOfBounds(f"{where} is {len(value)} bytes; the limit is {limit}")
    elif field.type in _INTEGER_TYPES:
        declared = _declared(field).max
        if declared or field.name.endswith("_seconds"):
            limit = declared or MAX_SECONDS
            if not 0 <= value <= limit:
                raise OutOfBounds(f"{where} is {value}; it must be between 0 and {limit}")


def _declared(field: FieldDescriptor) -> field_limits_pb2.FieldLimits:
    """The field's own (lapse.v1.limits) annotation; all zero (the shared bounds) without."""
    known = _DECLARED.get(field.full_name)
    if known is None:
        known = field.GetOptions().Extensions[field_limits_pb2.limits]
        _DECLARED[field.full_name] = known
    return known


_DECLARED: dict[str, field_limits_pb2.FieldLimits] = {}


def _screen_text(field: FieldDescriptor, text: str, where: str) -> None:
    limit = _declared(field).max_len or MAX_TEXT
    if len(text) > limit:
        raise OutOfBounds(
            f"{where} is {len(text)} characters long; the limit is {limit} (starts {excerpt(text)})"
        )
    if "\x00" in text:
        raise OutOfBounds(f"{where} contains a NUL character ({excerpt(text)})")


def _is_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return entry is not None and entry.GetOptions().map_entry


def _internal_error(method: str) -> tuple[grpc.StatusCode, str]:
    error_id = uuid.uuid4().hex[:12]
    logger.exception("unexpected error %s in %s", error_id, method)
    return grpc.StatusCode.INTERNAL, f"internal error {error_id} (the service log has the details)"


class RequestScreeningInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Screens each request (INVALID_ARGUMENT) and turns unexpected exceptions into INTERNAL
    with an error id. Unary and server-streaming methods, the shapes Lapse serves."""

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
