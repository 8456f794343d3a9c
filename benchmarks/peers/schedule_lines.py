"""How the benchmark hands grants to a peer process that schedules them: lines on stdin.

    grant <id> <role> <member> <expires_at>    schedule one grant's revocation
    sync                                       answer `ok <grants scheduled so far>` on stdout

End of input ends the process. The peer answers `ready` on stdout once it can take grants.
Role and member names are the target's own (`peer_bench_<run>_r<i>`), never with spaces.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from benchmarks.peers.target import Grant

Schedule = Callable[[Grant], None]


def encode(grant: Grant) -> str:
    return f"grant {grant.id} {grant.role} {grant.member} {grant.expires_at!r}"


def say(line: str) -> None:
    # The real stdout: Celery's worker redirects sys.stdout into its logger.
    out = sys.__stdout__
    assert out is not None
    out.write(f"{line}\n")
    out.flush()


def serve(schedule: Schedule) -> int:
    """Schedule every grant read from stdin until it ends; returns how many."""
    scheduled = 0
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "grant" and len(words) == 5:
            schedule(
                Grant(id=int(words[1]), role=words[2], member=words[3], expires_at=float(words[4]))
            )
            scheduled += 1
        elif words == ["sync"]:
            say(f"ok {scheduled}")
        else:
            raise ValueError(f"unexpected line on stdin: {line!r}")
    return scheduled
