"""`lapse-audit` / `python -m lapse_audit`: run the audit service."""

from __future__ import annotations

import asyncio

from lapse_audit.app import run


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
