"""The peers users would pick instead of Lapse, doing the bare job on the same target:
at a grant's expiry, `REVOKE role FROM user` in PostgreSQL and read it back.

- APScheduler 3.x: a BackgroundScheduler with its SQLAlchemyJobStore on the same PostgreSQL.
- Celery: a task sent with `countdown`, through a local Redis (deploy/local/redis.sh).

A Lapse benchmark measures them in the same run by calling the scenarios:

    from benchmarks.peers.scenarios import PeerEnvironment, burst, kill9, sustained

    env = PeerEnvironment(admin_dsn=..., redis_url=..., log_dir=...)
    print(sustained("apscheduler", env, rate=100, seconds=20).row())

Each scenario creates its own throwaway database and roles, runs the peer as separate OS
processes, returns a result with `HEADER` and `row()`, and drops what it created.
`benchmarks/peer_schedulers.py` is the command line over them. This module imports
nothing: the peers' own processes import the package too, and start no faster for it.
"""
