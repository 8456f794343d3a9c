"""The progress-based waits the integration tests rely on: they outlast any fixed budget while
something moves, and fail soon after it stops, saying what was stuck."""

from __future__ import annotations

import sys
import time

import pytest

from tests.integration.waiting import Stalled, run_watched, wait_for


async def test_a_wait_goes_on_while_the_count_moves_and_returns_when_accepted() -> None:
    started = time.monotonic()
    counter = [0]

    async def probe() -> int:
        counter[0] += 1
        return counter[0]

    # 30 polls 0.05 s apart take about 1.5 s: five times the stall interval.
    found = await wait_for(probe, lambda n: n >= 30, what="30 polls", stall=0.3, interval=0.05)
    assert found == 30
    assert time.monotonic() - started > 0.3 * 3


async def test_a_wait_fails_when_nothing_moved_for_the_stall_interval() -> None:
    started = time.monotonic()
    values = iter([1, 2, 3])

    async def probe() -> int:
        return next(values, 3)

    with pytest.raises(Stalled) as stalled:
        await wait_for(
            probe,
            lambda n: n >= 10,
            what="ten grants",
            stall=0.3,
            interval=0.05,
            describe=lambda n: f"{n} of 10 reached ACTIVE",
        )
    message = str(stalled.value)
    assert "gave up waiting for ten grants: nothing moved for 0.3s" in message
    assert message.endswith("3 of 10 reached ACTIVE")
    assert 0.3 <= time.monotonic() - started < 5


async def test_progress_decides_what_counts_as_movement() -> None:
    ticks = [0]

    async def probe() -> tuple[int, str]:
        ticks[0] += 1
        return ticks[0], "OFFLINE? no"  # a heartbeat age that changes; the status does not

    with pytest.raises(Stalled):
        await wait_for(
            probe,
            lambda v: "yes" in v[1],
            what="the status",
            progress=lambda v: v[1],
            stall=0.3,
            interval=0.05,
        )


def test_a_command_that_keeps_printing_runs_past_the_stall_interval() -> None:
    chatty = "import time\nfor i in range(8):\n    print(i, flush=True)\n    time.sleep(0.1)\n"
    finished = run_watched([sys.executable, "-c", chatty], stall=0.5)
    assert finished.returncode == 0
    assert finished.stdout.split() == [str(i) for i in range(8)]


def test_a_command_that_goes_quiet_is_stopped_with_what_it_printed() -> None:
    quiet = "import time\nprint('started', flush=True)\ntime.sleep(30)\n"
    started = time.monotonic()
    with pytest.raises(Stalled) as stalled:
        run_watched([sys.executable, "-c", quiet], stall=0.5, what="a quiet command")
    assert "gave up on a quiet command" in str(stalled.value)
    assert "started" in str(stalled.value)
    assert time.monotonic() - started < 10


def test_a_command_reads_its_answer_and_reports_its_exit_code() -> None:
    echo = "import sys\nprint(sys.stdin.read().upper())\nsys.exit(3)\n"
    finished = run_watched([sys.executable, "-c", echo], answer="revoke")
    assert finished.returncode == 3
    assert finished.stdout.strip() == "REVOKE"
