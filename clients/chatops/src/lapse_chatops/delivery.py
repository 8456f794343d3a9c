"""Failures to deliver something to a chat platform."""

from __future__ import annotations


class ChatDeliveryFailed(Exception):
    pass
