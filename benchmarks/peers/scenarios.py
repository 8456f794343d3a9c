"""The peer scenarios, each a function that a benchmark calls and that returns one result
row: sustained expiries at a rate, a burst due in the same second, and kill -9 of the peer
with a burst due. Each makes its own throwaway target and drops it before returning.

Times are the machine's wall clock: a grant's expiry is written by the benchmark, its
`verified_at` by the job's read-back in PostgreSQL (`clock_timestamp()`), on one machine.
Lateness = verified_at - expires_at, for grants that were verified revoked.

CPU per revocation is the user+sys CPU that the peer's processes (APScheduler's scheduler;
Celery's worker with its pool and the producer), the broker (Redis) and the PostgreSQL
backends serving the peer's connections used between the peer being ready and the last
grant settling (scheduling included), divided by the grants verified revoked.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.peers.processes import pids_cpu_seconds
from benchmarks.peers.runners import PeerRunner, runner_for
from benchmarks.peers.target import Outcome, Target

# The benchmark gives each grant a lead before it falls due, long enough for the peer to
# have scheduled it: a few seconds, plus whatever scheduling falls behind the expiries at
# this much per grant (measured: about 1.5 ms for APScheduler's add_job, less for Celery).
_BASE_LEAD = 3.0
_SCHEDULING_PER_GRANT = 0.004
# A run ends when every grant is settled, or once nothing has moved for this long after the
# last grant fell due.
_STALL = 30.0


@dataclass(frozen=True)
class PeerEnvironment:
    """Where the peers run: the PostgreSQL superuser DSN, the Redis URL (for Celery) and a
    directory for the peers' logs."""

    admin_dsn: str
    redis_url: str | None
    log_dir: Path


def log(message: str) -> None:
    print(f"[peers] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def lead_for(count: int, rate: float) -> float:
    return _BASE_LEAD + max(0.0, count * (_SCHEDULING_PER_GRANT - 1.0 / rate))


# ---------------------------------------------------------------- CPU


@dataclass(frozen=True)
class CpuReading:
    peer: float
    broker: float | None
    backends: dict[int, float]

    @classmethod
    def take(cls, runner: PeerRunner, target: Target) -> CpuReading:
        return cls(
            peer=runner.cpu_seconds(),
            broker=runner.broker_cpu_seconds(),
            backends=pids_cpu_seconds(target.backend_pids()),
        )


@dataclass(frozen=True)
class CpuPerRevocation:
    """Milliseconds of CPU per verified revocation."""

    peer_ms: float
    broker_ms: float | None
    postgres_ms: float

    @classmethod
    def between(cls, before: CpuReading, after: CpuReading, revocations: int) -> CpuPerRevocation:
        backends = sum(
            seconds - before.backends.get(pid, 0.0) for pid, seconds in after.backends.items()
        )
        per = 1000.0 / revocations if revocations else math.nan
        return cls(
            peer_ms=(after.peer - before.peer) * per,
            broker_ms=None
            if after.broker is None or before.broker is None
            else (after.broker - before.broker) * per,
            postgres_ms=backends * per,
        )

    def __str__(self) -> str:
        broker = "-" if self.broker_ms is None else f"{self.broker_ms:.2f}"
        return f"{self.peer_ms:.2f} + {broker} + {self.postgres_ms:.2f}"


# ---------------------------------------------------------------- common


@contextmanager
def _peer_on_target(
    peer: str, env: PeerEnvironment, count: int
) -> Iterator[tuple[PeerRunner, Target]]:
    log(f"{peer}: creating {count} throwaway roles and users")
    target = Target.create(env.admin_dsn, count)
    runner: PeerRunner | None = None
    try:
        runner = runner_for(peer, target, log_dir=env.log_dir, redis_url=env.redis_url)
        runner.start()
        yield runner, target
    finally:
        if runner is not None:
            runner.stop()
        target.drop()


@dataclass(frozen=True)
class Counts:
    grants: int
    verified: int
    lost: int
    twice: int
    misfired: int
    failed: int
    unverified: int

    @classmethod
    def of(cls, outcomes: Sequence[Outcome]) -> Counts:
        return cls(
            grants=len(outcomes),
            verified=sum(o.verified_at is not None for o in outcomes),
            lost=sum(o.still_member for o in outcomes),
            twice=sum(o.executions > 1 for o in outcomes),
            misfired=sum(o.misfired for o in outcomes),
            failed=sum(o.failed for o in outcomes),
            unverified=sum(not o.still_member and o.verified_at is None for o in outcomes),
        )


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.0f}"


def _scheduled(
    runner: PeerRunner, target: Target, expiries: Callable[[float], list[float]], *, lead: float
) -> tuple[float, float, list[float]]:
    """Place the grants' expiries `lead` from now, hand them to the peer; returns when the
    first falls due, how long scheduling took and the expiries."""
    first_due = time.time() + lead
    times = expiries(first_due)
    grants = target.place(times)
    took = runner.schedule(grants)
    return first_due, took, times


# ---------------------------------------------------------------- sustained


@dataclass(frozen=True)
class SustainedResult:
    peer: str
    rate: float
    seconds: float
    counts: Counts
    p50: float
    p99: float
    max: float
    achieved_rate: float
    first_fifth_p50: float
    last_fifth_p50: float
    cpu: CpuPerRevocation
    scheduling_overran: bool

    @property
    def grows(self) -> bool:
        """Lateness grows when the last fifth's median is over twice the first fifth's and
        later by more than 50 ms (a steady run wobbles by a few ms)."""
        return self.last_fifth_p50 > max(2 * self.first_fifth_p50, self.first_fifth_p50 + 0.05)

    HEADER = (
        "| peer | rate/s x s | grants | verified | achieved/s | lateness p50 / p99 / max ms"
        " | p50 first -> last fifth ms | grows | misfired | lost | twice"
        " | CPU ms/revocation peer + broker + PostgreSQL |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )

    def row(self) -> str:
        c = self.counts
        note = " (scheduling overran the lead)" if self.scheduling_overran else ""
        return (
            f"| {self.peer} | {self.rate:g} x {self.seconds:g}{note} | {c.grants} | {c.verified}"
            f" | {self.achieved_rate:.1f} | {_ms(self.p50)} / {_ms(self.p99)} / {_ms(self.max)}"
            f" | {_ms(self.first_fifth_p50)} -> {_ms(self.last_fifth_p50)}"
            f" | {'yes' if self.grows else 'no'} | {c.misfired} | {c.lost} | {c.twice}"
            f" | {self.cpu} |"
        )


def sustained(peer: str, env: PeerEnvironment, *, rate: float, seconds: float) -> SustainedResult:
    """Grants falling due at `rate` per second for `seconds`."""
    count = max(1, round(rate * seconds))
    with _peer_on_target(peer, env, count) as (runner, target):
        lead = lead_for(count, rate)
        before = CpuReading.take(runner, target)
        log(f"{peer}: scheduling {count} grants due at {rate:g}/s for {seconds:g} s")
        first_due, took, times = _scheduled(
            runner, target, lambda start: [start + i / rate for i in range(count)], lead=lead
        )
        target.wait_settled(until=times[-1], stall=_STALL)
        after = CpuReading.take(runner, target)
        outcomes = target.outcomes()
    lateness = [o.lateness for o in outcomes if o.lateness is not None]
    fifth = max(1, len(outcomes) // 5)
    first = [o.lateness for o in outcomes[:fifth] if o.lateness is not None]
    last = [o.lateness for o in outcomes[-fifth:] if o.lateness is not None]
    verified_at = [o.verified_at for o in outcomes if o.verified_at is not None]
    span = max(verified_at) - first_due if verified_at else math.nan
    counts = Counts.of(outcomes)
    return SustainedResult(
        peer=peer,
        rate=rate,
        seconds=seconds,
        counts=counts,
        p50=percentile(lateness, 0.5),
        p99=percentile(lateness, 0.99),
        max=max(lateness, default=math.nan),
        achieved_rate=counts.verified / span if span and span > 0 else math.nan,
        first_fifth_p50=percentile(first, 0.5),
        last_fifth_p50=percentile(last, 0.5),
        cpu=CpuPerRevocation.between(before, after, counts.verified),
        scheduling_overran=took > lead + (count - 1) / rate,
    )


# ---------------------------------------------------------------- burst


@dataclass(frozen=True)
class BurstResult:
    peer: str
    counts: Counts
    all_verified_after: float
    p50: float
    p99: float
    cpu: CpuPerRevocation
    scheduling_overran: bool

    HEADER = (
        "| peer | due in one second | verified | all verified after s | lateness p50 / p99 ms"
        " | misfired | lost | twice | CPU ms/revocation peer + broker + PostgreSQL |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )

    def row(self) -> str:
        c = self.counts
        note = " (scheduling overran the lead)" if self.scheduling_overran else ""
        done = "-" if math.isnan(self.all_verified_after) else f"{self.all_verified_after:.2f}"
        if c.verified < c.grants:
            done = f"{done} ({c.grants - c.verified} never)"
        return (
            f"| {self.peer} | {c.grants}{note} | {c.verified} | {done}"
            f" | {_ms(self.p50)} / {_ms(self.p99)} | {c.misfired} | {c.lost} | {c.twice}"
            f" | {self.cpu} |"
        )


def _one_second(count: int) -> Callable[[float], list[float]]:
    return lambda start: [start + i / count for i in range(count)]


def burst(peer: str, env: PeerEnvironment, *, due: int) -> BurstResult:
    """`due` grants falling due within the same second."""
    with _peer_on_target(peer, env, due) as (runner, target):
        lead = lead_for(due, due)
        before = CpuReading.take(runner, target)
        log(f"{peer}: scheduling {due} grants due in the same second")
        first_due, took, times = _scheduled(runner, target, _one_second(due), lead=lead)
        target.wait_settled(until=times[-1], stall=_STALL)
        after = CpuReading.take(runner, target)
        outcomes = target.outcomes()
    lateness = [o.lateness for o in outcomes if o.lateness is not None]
    verified_at = [o.verified_at for o in outcomes if o.verified_at is not None]
    counts = Counts.of(outcomes)
    return BurstResult(
        peer=peer,
        counts=counts,
        all_verified_after=max(verified_at) - first_due if verified_at else math.nan,
        p50=percentile(lateness, 0.5),
        p99=percentile(lateness, 0.99),
        cpu=CpuPerRevocation.between(before, after, counts.verified),
        scheduling_overran=took > lead + 1.0,
    )


# ---------------------------------------------------------------- kill -9


@dataclass(frozen=True)
class KillResult:
    peer: str
    counts: Counts
    kill_at: float
    down: float
    ready_after: float
    waited: float
    drained_after: float
    verified_before_kill: int

    HEADER = (
        "| peer | due | killed at (s from due) | down s | ready after restart s"
        " | revoked before kill | revoked in all | lost | ran twice | skipped as misfire"
        " | failed | revoked unverified | drained after restart s | waited s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )

    def row(self) -> str:
        c = self.counts
        drained = "-" if math.isnan(self.drained_after) else f"{self.drained_after:.2f}"
        return (
            f"| {self.peer} | {c.grants} | {self.kill_at:+g} | {self.down:g}"
            f" | {self.ready_after:.2f} | {self.verified_before_kill} | {c.grants - c.lost}"
            f" | {c.lost} | {c.twice}"
            f" | {c.misfired} | {c.failed} | {c.unverified} | {drained} | {self.waited:.0f} |"
        )


def kill9(
    peer: str, env: PeerEnvironment, *, due: int, kill_at: float, down: float, wait: float
) -> KillResult:
    """`due` grants falling due in the same second; the peer's timer process is killed with
    SIGKILL `kill_at` seconds from the first due time (negative: before), restarted `down`
    seconds later, and given up to `wait` seconds to revoke them."""
    with _peer_on_target(peer, env, due) as (runner, target):
        lead = max(lead_for(due, due), 1.0 - kill_at)
        log(f"{peer}: scheduling {due} grants due in the same second, kill -9 at {kill_at:+g} s")
        first_due, _, _ = _scheduled(runner, target, _one_second(due), lead=lead)
        time.sleep(max(0.0, first_due + kill_at - time.time()))
        runner.kill9()
        killed_at = time.time()
        log(f"{peer}: killed; restarting in {down:g} s")
        time.sleep(down)
        restarted_at = time.time()
        ready_after = runner.restart()
        log(f"{peer}: ready {ready_after:.2f} s after restart; waiting up to {wait:g} s")
        deadline = restarted_at + wait
        while time.time() < deadline and target.settled() < due:
            time.sleep(0.5)
        waited = time.time() - restarted_at
        outcomes = target.outcomes()
    counts = Counts.of(outcomes)
    after_restart = [
        o.verified_at for o in outcomes if o.verified_at is not None and o.verified_at > killed_at
    ]
    return KillResult(
        peer=peer,
        counts=counts,
        kill_at=kill_at,
        down=down,
        ready_after=ready_after,
        waited=waited,
        drained_after=max(after_restart) - restarted_at if after_restart else math.nan,
        verified_before_kill=sum(
            o.verified_at is not None and o.verified_at <= killed_at for o in outcomes
        ),
    )
