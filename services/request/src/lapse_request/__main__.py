"""`lapse-request` / `python -m lapse_request`: run the request service."""

from __future__ import annotations

import asyncio

from lapse_request.app import run


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
