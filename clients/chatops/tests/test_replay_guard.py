"""The replay memory: once per key inside the window, forgotten after, never unbounded."""

from __future__ import annotations

import pytest
from lapse_chatops.replay_guard import Replayed, ReplayGuard, ReplayMemoryFull


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_admitted_once_until_it_expires() -> None:
    clock = Clock()
    guard = ReplayGuard(max_entries=10, now=clock)
    guard.admit("slack:v0=abc", remember_until=1_300)
    clock.now = 1_299.9
    with pytest.raises(Replayed, match="already accepted"):
        guard.admit("slack:v0=abc", remember_until=1_300)
    # Past its window the freshness check refuses it; the memory can let go.
    clock.now = 1_300
    guard.admit("slack:v0=abc", remember_until=1_600)
    assert len(guard) == 1


def test_full_memory_refuses_new_calls_instead_of_forgetting_live_ones() -> None:
    clock = Clock()
    guard = ReplayGuard(max_entries=3, now=clock)
    for i in range(3):
        guard.admit(f"k{i}", remember_until=1_300)
    with pytest.raises(ReplayMemoryFull):
        guard.admit("k3", remember_until=1_300)
    # Forgetting k0 to make room would let k0 be replayed.
    with pytest.raises(Replayed):
        guard.admit("k0", remember_until=1_300)
    clock.now = 1_300
    guard.admit("k3", remember_until=1_600)
    assert len(guard) == 1


def test_memory_stays_bounded_under_a_steady_stream() -> None:
    clock = Clock()
    guard = ReplayGuard(max_entries=400, now=clock)
    for i in range(10_000):
        clock.now = 1_000 + i
        guard.admit(f"call-{i}", remember_until=clock.now + 301)
    assert len(guard) == 301


def test_needs_room() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ReplayGuard(max_entries=0)
