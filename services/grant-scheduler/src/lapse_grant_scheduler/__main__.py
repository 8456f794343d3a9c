"""`lapse-grant-scheduler` / `python -m lapse_grant_scheduler`: run the scheduler."""

from __future__ import annotations

import asyncio

from lapse_grant_scheduler.app import run


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
