"""`lapse-chatops` / `python -m lapse_chatops`: run the Slack and Teams front end."""

from __future__ import annotations

import asyncio
import sys

from lapse_chatops.app import ConfigurationError, run


def main() -> None:
    try:
        asyncio.run(run())
    except ConfigurationError as error:
        print(f"lapse-chatops: refusing to start: {error}", file=sys.stderr)
        raise SystemExit(2) from error


if __name__ == "__main__":
    main()
