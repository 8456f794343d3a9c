"""Waiting on a running system by its progress, never by a wall-clock budget tuned to one
machine.

The machines tests run on differ in speed from run to run, so a wait does not say "within
30 s": it goes on for as long as what it watches keeps moving (more grants ACTIVE, one more
line of output, a status that changed) and fails only when nothing has moved for a generous
`stall` interval, naming what was stuck. On a fast machine a wait is as short as the work; on
a slow one it is as long as the work; only a system that stopped making progress fails it.
A ceiling keeps a wait on something that never settles from running forever."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from typing import IO, TypeVar

T = TypeVar("T")

# How long nothing may move before a wait gives up: far longer than any single step takes on
# a loaded machine (a service restart, an ack deadline and its retries, a Kafka rebalance).
STALL_SECONDS = 90.0
# A wait whose probe keeps changing without ever being accepted still ends.
CEILING_SECONDS = 1800.0
_SHOWN_CHARACTERS = 4000
_UNSEEN = object()


class Stalled(AssertionError):
    """Nothing moved for the stall interval (or the ceiling passed) before the condition."""


def _shown(value: object) -> str:
    text = str(value)
    if len(text) <= _SHOWN_CHARACTERS:
        return text
    return text[:_SHOWN_CHARACTERS] + f"\n... ({len(text) - _SHOWN_CHARACTERS} more characters)"


class ProgressWatch:
    """Tells whether something moved recently: `moved(marker)` for each new observation,
    `stalled_for()` since the marker last changed. Shared by the async probe loop and the
    output-driven watchdogs of processes."""

    def __init__(self, *, stall: float = STALL_SECONDS, ceiling: float = CEILING_SECONDS) -> None:
        self.stall = stall
        self.ceiling = ceiling
        self.started = time.monotonic()
        self._last_change = self.started
        self._marker: object = _UNSEEN

    def observe(self, marker: object) -> None:
        if marker != self._marker:
            self._marker = marker
            self._last_change = time.monotonic()

    def stalled_for(self) -> float:
        return time.monotonic() - self._last_change

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def exhausted(self) -> str | None:
        """Why to give up now, or None while the wait may go on."""
        if self.stalled_for() > self.stall:
            return (
                f"nothing moved for {self.stall:g}s (after {self.elapsed():.0f}s of waiting in all)"
            )
        if self.elapsed() > self.ceiling:
            return f"still not there after {self.ceiling:g}s although it kept changing"
        return None


async def wait_for(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    *,
    what: str,
    progress: Callable[[T], object] | None = None,
    describe: Callable[[T], str] | None = None,
    stall: float = STALL_SECONDS,
    interval: float = 0.1,
) -> T:
    """Poll `probe` until `accept` holds for its value.

    `progress` maps a value to what counts as movement (default: the value itself, so any
    change counts); the wait fails only once that has not changed for `stall` seconds.
    `describe` turns the last value into the failure message (default: the value)."""
    watch = ProgressWatch(stall=stall)
    while True:
        value = await probe()
        if accept(value):
            return value
        watch.observe(progress(value) if progress is not None else value)
        why = watch.exhausted()
        if why is not None:
            shown = describe(value) if describe is not None else _shown(value)
            raise Stalled(f"gave up waiting for {what}: {why}; last seen:\n{shown}")
        await asyncio.sleep(interval)


def run_watched(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    answer: str | None = None,
    stall: float = STALL_SECONDS,
    what: str = "",
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end, as `subprocess.run` with captured text would, but with no
    deadline of its own: it is killed (and the wait fails) only when it has printed nothing
    new for `stall` seconds. A command that reports progress (the CLI following a panic, a
    start script waiting for readiness) may take as long as the machine needs."""
    process = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.PIPE if answer is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    streams: dict[str, list[str]] = {"stdout": [], "stderr": []}
    lines_seen = [0]
    lock = threading.Lock()

    def pump(name: str, source: IO[str]) -> None:
        for line in source:
            with lock:
                streams[name].append(line)
                lines_seen[0] += 1

    pumps = [
        threading.Thread(target=pump, args=(name, source), daemon=True)
        for name, source in (("stdout", process.stdout), ("stderr", process.stderr))
        if source is not None
    ]
    for thread in pumps:
        thread.start()
    if answer is not None and process.stdin is not None:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.write(answer)
        process.stdin.close()
    watch = ProgressWatch(stall=stall)
    while process.poll() is None:
        with lock:
            watch.observe(lines_seen[0])
        why = watch.exhausted()
        if why is not None:
            process.kill()
            process.wait()
            for thread in pumps:
                thread.join(timeout=5)
            raise Stalled(
                f"gave up on {what or ' '.join(argv)}: {why}; it printed:\n"
                + _shown("".join(streams["stdout"]) + "".join(streams["stderr"]))
            )
        time.sleep(0.1)
    for thread in pumps:
        thread.join()
    return subprocess.CompletedProcess(
        argv, process.returncode, "".join(streams["stdout"]), "".join(streams["stderr"])
    )
