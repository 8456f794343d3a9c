"""`lapse-revoker` / `python -m lapse_revoker`: run the revoker."""

from __future__ import annotations

import asyncio

from lapse_revoker.app import run


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
