"""The peers' OS processes: start, wait for a line, read their CPU, kill -9.

Every peer process is started in a session of its own, so that its CPU (with its children's,
e.g. Celery's pool) is the sum over that session in /proc, and `kill -9` takes the whole
session down at once, as a crash of its machine or container would.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; it ends at the last ')'.
    return text[text.rindex(")") + 2 :].split()


def _cpu_of(fields: list[str]) -> float:
    # utime, stime, and cutime, cstime: the CPU of children it has reaped, which are gone.
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / _TICK


def process_cpu_seconds(pid: int) -> float:
    fields = _stat_fields(pid)
    return 0.0 if fields is None else _cpu_of(fields)


def session_cpu_seconds(session: int) -> float:
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if fields is not None and int(fields[3]) == session:
            total += _cpu_of(fields)
    return total


def pids_cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    return {pid: process_cpu_seconds(pid) for pid in pids}


class PeerProcess:
    """One peer process: stdout lines are read on a thread, stderr goes to a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log_dir: Path,
        stdin: bool = False,
    ) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        self._lines: queue.Queue[str | None] = queue.Queue()
        with self.log.open("ab") as log:
            self._popen = subprocess.Popen(
                [sys.executable, *argv],
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO), **env},
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,
            )
        threading.Thread(target=self._read_stdout, daemon=True, name=f"{name}-stdout").start()

    def _read_stdout(self) -> None:
        assert self._popen.stdout is not None
        for line in self._popen.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    @property
    def pid(self) -> int:
        return self._popen.pid

    def expect(self, prefix: str, *, timeout: float) -> str:
        """The next stdout line starting with `prefix` (other lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(
                    f"{self.name}: no '{prefix}' line within {timeout:.0f} s (log: {self.log})"
                ) from None
            if line is None:
                raise RuntimeError(
                    f"{self.name} exited ({self._popen.wait()}) before '{prefix}' (log: {self.log})"
                )
            if line.startswith(prefix):
                return line

    def send(self, lines: Sequence[str]) -> None:
        assert self._popen.stdin is not None
        self._popen.stdin.write("".join(f"{line}\n" for line in lines))
        self._popen.stdin.flush()

    def cpu_seconds(self) -> float:
        return session_cpu_seconds(self.pid)

    def _signal(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)

    def kill9(self) -> None:
        """SIGKILL to every process of its session, at once."""
        self._signal(signal.SIGKILL)
        self._popen.wait()

    def stop(self, *, timeout: float = 20.0) -> None:
        """Close stdin, SIGTERM the session, SIGKILL what is left after `timeout`."""
        if self._popen.stdin is not None and not self._popen.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self._popen.stdin.close()
        if self._popen.poll() is None:
            self._signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=timeout)
        # Also pool processes that outlived their parent.
        self._signal(signal.SIGKILL)
        self._popen.wait()
