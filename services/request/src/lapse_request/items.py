"""Storing requested items compactly alongside the request row."""

from __future__ import annotations

from collections.abc import Iterable

from lapse_common.pb.lapse.v1 import common_pb2


def pack_items(items: Iterable[common_pb2.GrantSpec]) -> str:
    return ",".join(item.SerializeToString(deterministic=True).hex() for item in items)


def unpack_items(blob: str) -> list[common_pb2.GrantSpec]:
    items = []
    for chunk in filter(None, blob.split(",")):
        item = common_pb2.GrantSpec()
        item.ParseFromString(bytes.fromhex(chunk))
        items.append(item)
    return items
